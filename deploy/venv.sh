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
# The native accelerator (schemas/native/, a Rust crate built with maturin into the separate
# distribution baldur-audit-native) is built in release mode and installed when `cargo` is on
# PATH or in ~/.cargo/bin; .venv/.stamp-native holds a hash of its sources (Cargo.toml,
# Cargo.lock, pyproject.toml, src/*.rs), so an edit rebuilds it. The first build takes about
# a minute (crates from crates.io, maturin from PyPI); without cargo one warning line is printed
# and the pure-Python reference path runs (docs/PERFORMANCE.md, "Native accelerator").
#
# Environment: PYTHON (default python3), VENV_FORCE=1 to reinstall regardless of the stamps.
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
            \( -name __pycache__ -o -name '*.egg-info' -o -name '.*' ! -name . -o -path schemas/native \) -prune -o \
            -type f \( -name '*.py' -o -name '*.pyi' -o -name '*.avsc' -o -name '*.sql' \
            -o -name '*.json' -o -name '*.md' -o -name py.typed \) -print 2>/dev/null | LC_ALL=C sort
    } | sha256sum | cut -d' ' -f1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating .venv with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    "$PYTHON" -m venv "$VENV"
    rm -f "$STAMP"
fi

NATIVE="$ROOT/schemas/native"
NATIVE_STAMP="$VENV/.stamp-native"
CARGO="$(command -v cargo || true)"
if [[ -z "$CARGO" && -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
    CARGO="${CARGO_HOME:-$HOME/.cargo}/bin/cargo"
fi

native_fingerprint() {
    if [[ -z "$CARGO" ]]; then
        echo "no cargo"
        return
    fi
    (cd "$NATIVE" && sha256sum Cargo.toml Cargo.lock pyproject.toml src/*.rs) | sha256sum | cut -d' ' -f1
}

# Build and install the native accelerator when its sources (or cargo's presence) changed.
native() {
    local want_native
    want_native="$(native_fingerprint)"
    if [[ "${VENV_FORCE:-0}" != 1 && -f "$NATIVE_STAMP" && "$(<"$NATIVE_STAMP")" == "$want_native" ]]; then
        return
    fi
    if [[ -z "$CARGO" ]]; then
        log "warning: cargo not found: the native accelerator is not built, the pure-Python reference path runs"
        echo "$want_native" >"$NATIVE_STAMP"
        return
    fi
    local t0=$SECONDS
    log "building the native accelerator (schemas/native, release) with $CARGO"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'maturin>=1.7,<2'
    PATH="$VENV/bin:$(dirname "$CARGO"):$PATH" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        --no-build-isolation --force-reinstall --no-deps "$NATIVE"
    echo "$want_native" >"$NATIVE_STAMP"
    log "native accelerator installed in $((SECONDS - t0)) s"
}

want="$(fingerprint)"
if [[ "${VENV_FORCE:-0}" != 1 && -f "$STAMP" && "$(<"$STAMP")" == "$want" ]]; then
    native
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
native
