#!/usr/bin/env bash
# `make lint` (and the first step of `make test`): ruff's checks, ruff's formatting, and mypy —
# strict for the pure core (schemas/), the default checks for producers/ and consumers/.
#
# mypy needs the import names (baldur_audit.*), which pyproject.toml maps from the top-level
# folders; the editable install's path finder is invisible to it, so it reads them through a
# tree of symlinks in .local/typecheck (new modules are seen at once).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
PATHS=(producers consumers schemas tests bench deploy)
TREE="$ROOT/.local/typecheck"
rc=0

"$BIN/ruff" check "${PATHS[@]}" || rc=1
"$BIN/ruff" format --check --quiet "${PATHS[@]}" || { echo "lint: run '$BIN/ruff format ${PATHS[*]}'" >&2; rc=1; }

mkdir -p "$TREE/baldur_audit"
for package in schemas producers consumers; do
    ln -sfn "$ROOT/$package" "$TREE/baldur_audit/$package"
done
(
    cd "$TREE"
    "$BIN/python" -m mypy --config-file "$ROOT/pyproject.toml" --strict -p baldur_audit.schemas
    "$BIN/python" -m mypy --config-file "$ROOT/pyproject.toml" -p baldur_audit.producers \
        -p baldur_audit.consumers
) || rc=1

exit $rc
