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

"$PY" - "${wheels[0]}" <<'EOF'
import sys
import zipfile

path = sys.argv[1]
names = sorted(zipfile.ZipFile(path).namelist())
print(f"{path}:")
for n in names:
    print("  " + n)

required_files = [
    "baldur_audit/schemas/avro/change_event.avsc",
    "baldur_audit/producers/py.typed",
    "baldur_audit/schemas/py.typed",
    "baldur_audit/consumers/py.typed",
    "baldur_audit/schemas/CHAIN.md",
    "baldur_audit/schemas/vectors/chain-v2.json",
    "baldur_audit/schemas/vectors/merkle-v1.json",
    "baldur_audit/schemas/vectors/checkpoint-v1.json",
]
required_prefixes = {
    # wheels have no directory entries: require at least one SQL file in it
    "baldur_audit/consumers/migrations/": ".sql",
}
missing = [f for f in required_files if f not in names]
for prefix, suffix in required_prefixes.items():
    if not any(n.startswith(prefix) and n.endswith(suffix) for n in names):
        missing.append(f"{prefix}*{suffix}")
metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
requires = [line.split(":", 1)[1].strip() for line in
            zipfile.ZipFile(path).read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")]
core = sorted(r.split(">")[0].split("<")[0].split("=")[0].strip() for r in requires
              if "extra ==" not in r)
if core != ["confluent-kafka", "fastavro"]:
    missing.append(f"core dependencies should be confluent-kafka and fastavro only, found {core}")
if missing:
    print("wheel-check: MISSING from the wheel:", *missing, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"wheel-check: OK ({len(names)} entries; avsc, migrations and py.typed present)")
EOF
