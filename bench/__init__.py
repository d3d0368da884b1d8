"""The benchmarks (benchmarks only: no test module is imported here; the full-scale
reliability campaigns are ``tests/campaigns/``). Run from the repository root with the local
stack up, e.g. ``eval "$(make -s env)"; .venv/bin/python -m bench.pipeline --quick``; ``make
bench`` runs the pipeline benchmark. Nothing asserts a timing: they measure and report.
"""
