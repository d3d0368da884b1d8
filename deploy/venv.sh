#!/usr/bin/env bash
# Create/refresh the project venv (.venv) with an editable install of baldur-audit.
#
# The install uses setuptools' default (lenient) editable mode: a path finder maps the
# baldur_audit.* packages to producers/, consumers/ and schemas/, so new modules are seen at
# once (deploy/check-wheel.sh checks what a real wheel contains). .venv/.stamp holds a hash of
#   - pyproject.toml (content),
#   - the install command line (extras, options),
#   - the *list* of package files (.py/.pyi/.avsc/.sql/.json/.md/py.typed) under producers/,
#     consumers/ and schemas/, tracked or not.
# Editing a file changes nothing; adding, removing or renaming one re-runs `pip install -e`
# (cheap, and it keeps package-data listings current). A no-op run takes well under a second.
#
# Environment: PYTHON (default python3), VENV_FORCE=1 to reinstall regardless of the stamp.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMP="$VENV/.stamp"
PYTHON="${PYTHON:-python3}"
EXTRAS='.[ledger,dev]'
PIP_INSTALL=(install -e "$EXTRAS")

log() { echo "venv: $*" >&2; }

fingerprint() {
    {
        echo "cmd: ${PIP_INSTALL[*]}"
        sha256sum pyproject.toml
        find producers consumers schemas \
            \( -name __pycache__ -o -name '*.egg-info' -o -name '.*' ! -name . \) -prune -o \
            -type f \( -name '*.py' -o -name '*.pyi' -o -name '*.avsc' -o -name '*.sql' \
            -o -name '*.json' -o -name '*.md' -o -name py.typed \) -print 2>/dev/null | LC_ALL=C sort
    } | sha256sum | cut -d' ' -f1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating .venv with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    "$PYTHON" -m venv "$VENV"
    rm -f "$STAMP"
fi

want="$(fingerprint)"
if [[ "${VENV_FORCE:-0}" != 1 && -f "$STAMP" && "$(<"$STAMP")" == "$want" ]]; then
    exit 0
fi

t0=$SECONDS
log "pip ${PIP_INSTALL[*]}"
# editable installs of a pyproject.toml project need setuptools >= 64 and pip >= 21.3 (PEP 660).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check 'pip>=23.1'
# Build without isolation so a reinstall after adding a module takes seconds, not a fresh
# download of setuptools: the [build-system] requirements from pyproject.toml go into the venv.
mapfile -t build_reqs < <("$VENV/bin/python" "$ROOT/deploy/tools/build_requirements.py" pyproject.toml)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${build_reqs[@]}"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation "${PIP_INSTALL[@]}"
echo "$want" >"$STAMP"
log "installed in $((SECONDS - t0)) s"
