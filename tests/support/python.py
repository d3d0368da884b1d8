"""Run Python code in a fresh interpreter with this process's import roots: what a module
loads when imported, and what the core does under another interpreter setting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_python(code: str, env_extra: dict[str, str] | None = None) -> str:
    """Run ``code`` (dedented) in a new interpreter; its stdout. Fails the test on an error.
    ``PYTHONINTMAXSTRDIGITS`` is unset unless ``env_extra`` sets it."""
    env = dict(os.environ)
    env.pop("PYTHONINTMAXSTRDIGITS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # same import roots as here
    env.update(env_extra or {})
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
