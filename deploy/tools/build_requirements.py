#!/usr/bin/env python3
"""Print the ``[build-system] requires`` of pyproject.toml, one per line.

``deploy/venv.sh`` installs them into the venv so that the editable install can build without
isolation (a reinstall after adding a module takes seconds, not a fresh download of
setuptools): ``.venv/bin/python deploy/tools/build_requirements.py pyproject.toml``.
"""

from __future__ import annotations

import sys
import tomllib


def requirements(path: str) -> list[str]:
    """The build requirements (setuptools and wheel when the file names none)."""
    with open(path, "rb") as handle:
        config = tomllib.load(handle)
    return list(config.get("build-system", {}).get("requires", ["setuptools", "wheel"]))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print("\n".join(requirements(args[0] if args else "pyproject.toml")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
