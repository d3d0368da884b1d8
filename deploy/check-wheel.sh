#!/usr/bin/env bash
# `make wheel-check`: build the wheel into .local/dist, list it, and assert that the package data
# the runtime needs is inside (Avro schema, SQL migrations, PEP 561 markers).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
DIST="$ROOT/.local/dist"
PY="$ROOT/.venv/bin/python"

rm -rf "$DIST"
mkdir -p "$DIST"
# `python -m build` without --wheel builds the sdist first and then the wheel *from the unpacked
# sdist* in a temp dir: stale files in build/ (old build/lib, the editable link tree) cannot leak
# into the wheel, and a file missing from the sdist shows up as missing here too.
"$PY" -m build --outdir "$DIST" . >"$DIST/build.log" 2>&1 || {
    tail -n 40 "$DIST/build.log" >&2
    echo "wheel-check: build failed (log: ${DIST#"$ROOT"/}/build.log)" >&2
    exit 1
}
shopt -s nullglob
wheels=("$DIST"/*.whl)
[[ ${#wheels[@]} -eq 1 ]] || { echo "wheel-check: expected one wheel in $DIST, found ${#wheels[@]}" >&2; exit 1; }

"$PY" "$ROOT/deploy/tools/wheel_contents.py" "${wheels[0]}"
