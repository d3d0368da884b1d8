#!/usr/bin/env bash
# The deployment checker (deploy/tools/k8scheck, Go): builds it into .local/bin/k8scheck when
# its sources or the Go version changed, then runs it with the given arguments.
#
#   deploy/k8scheck.sh build                                   # build only
#   deploy/k8scheck.sh manifests -k deploy/k8s/base            # render with kustomize's library, check
#   kubectl kustomize deploy/k8s/overlays/prod | deploy/k8scheck.sh manifests -   # check any stream
#   deploy/k8scheck.sh render deploy/k8s/base                  # what `kubectl kustomize` prints
#   deploy/k8scheck.sh compose deploy/docker-compose.yml       # compose-spec schema + policy
#
# Needs Go >= 1.26 (the machine image has /usr/local/go; Debian's golang-go is too old) and, for
# the first build, the Go module proxy (about 270 MB of modules into the module cache, once).
# A no-op run costs one sha256sum of the sources. Exit status: k8scheck's (0 fine, 1 problems,
# 2 unreadable input or usage), or 2 when it cannot be built.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
SRC="$ROOT/deploy/tools/k8scheck"
BIN="$ROOT/.local/bin/k8scheck"
STAMP="$BIN.stamp"
# -mod=readonly: go.mod and go.sum are committed and never rewritten by a build;
# GOTOOLCHAIN=local: never download another toolchain.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"

log() { echo "k8scheck.sh: $*" >&2; }

find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        return 1
    fi
}

build() {
    local go want
    if ! go="$(find_go)"; then
        log "Go is not installed (Go >= 1.26 is needed to build deploy/tools/k8scheck)"
        return 2
    fi
    want="$(
        {
            "$go" version
            echo "$GOFLAGS"
            cd "$SRC" && sha256sum go.mod go.sum ./*.go
        } | sha256sum | cut -d' ' -f1
    )"
    if [[ -x "$BIN" && -f "$STAMP" && "$(<"$STAMP")" == "$want" ]]; then
        return 0
    fi
    log "building $BIN ($("$go" version | cut -d' ' -f3))"
    mkdir -p "$(dirname "$BIN")"
    local tmp="$BIN.$$.tmp"
    if ! (cd "$SRC" && "$go" build -o "$tmp" .); then
        rm -f "$tmp"
        log "the build failed"
        return 2
    fi
    mv -f "$tmp" "$BIN" # atomic: a concurrent run sees the old binary or the new one
    echo "$want" >"$STAMP"
}

build || exit $?
if [[ "${1:-}" == build ]]; then
    exit 0
fi
exec "$BIN" "$@"
