#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanup/load_started are reached only through the traps
# `make test`: venv, lint (deploy/lint.sh), start the services that are not already running, run
# pytest against them, then stop exactly the services this run started -- also when pytest fails
# or is interrupted.
# Services that were already up (e.g. from `make up`) are left running.
#
#   PYTEST_ARGS='-k chain -x' deploy/run-tests.sh [more pytest args]
#
# Exits with pytest's status, or 1 if the lint failed (pytest still runs) or the stack could not
# be brought up.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT" || exit 1
D="$ROOT/deploy"
STARTED="$ROOT/.local/started-by-up"
started=()
up_ran=

load_started() {
    # The services `stack.sh up` started in this run (it recreates the file, one name per line).
    started=()
    [[ -n "$up_ran" && -f "$STARTED" ]] && mapfile -t started <"$STARTED"
    return 0
}

kill_tree() {
    # A process and its descendants, by PID (the background checker build runs go and its compilers).
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    if [[ -n "${k8scheck_pid:-}" ]] && kill -0 "$k8scheck_pid" 2>/dev/null; then
        kill_tree "$k8scheck_pid"
    fi
    load_started
    if [[ -n "$up_ran" && ${#started[@]} -eq 0 ]]; then
        echo "run-tests: services were already running before this run; leaving them up" >&2
    fi
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        [[ -n "${started[i]}" ]] || continue
        echo "run-tests: stopping ${started[i]} (started by this run)" >&2
        "$D/${started[i]}.sh" stop || true
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The manifest checker (Go) takes minutes to compile the first time on a fresh machine: build it
# in the background while the rest is set up, and wait for it before pytest.
mkdir -p "$ROOT/.local"
"$D/k8scheck.sh" build >"$ROOT/.local/k8scheck-build.log" 2>&1 &
k8scheck_pid=$!
"$D/venv.sh" || exit 1
lint_rc=0
"$D/lint.sh" || { lint_rc=1; echo "run-tests: lint failed (deploy/lint.sh); running the tests anyway" >&2; }
# The fault scenarios' set-up: Kafka's tools jar (kafka-consumer-groups) and kcat (the foreign
# client of the poison scenario, from Debian's packages).
"$D/run-faults.sh" --setup-only || { echo "run-tests: fault-scenario set-up failed" >&2; exit 1; }
"$D/prometheus.sh" install || { echo "run-tests: Prometheus (deploy/prometheus.sh install) failed" >&2; exit 1; }
"$D/redis.sh" install || { echo "run-tests: redis-server (deploy/redis.sh install) failed" >&2; exit 1; }
"$D/java-producer.sh" build || { echo "run-tests: the Java example producer (deploy/java-producer.sh build) failed" >&2; exit 1; }
"$D/browser.sh" install || { echo "run-tests: Chromium for the viewer's browser test (deploy/browser.sh install) failed" >&2; exit 1; }
# The secured stack's certificates (tests/support/secured.py) are made with the openssl tool.
command -v openssl >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
} || { echo "run-tests: installing openssl failed" >&2; exit 1; }

rm -f "$STARTED"
up_ran=1
"$D/stack.sh" up || { echo "run-tests: stack failed to come up" >&2; exit 1; }

eval "$("$D/stack.sh" env)"
wait "$k8scheck_pid" || {
    cat "$ROOT/.local/k8scheck-build.log" >&2
    echo "run-tests: building the manifest checker (deploy/k8scheck.sh build) failed" >&2
    exit 1
}

# PYTEST_ARGS is split like a shell command line, so quoting works: PYTEST_ARGS='-k "a and b"'.
extra=()
eval "extra=(${PYTEST_ARGS:-})"
# Two pytest-xdist workers (BALDUR_TEST_WORKERS=0: one process); tests/conftest.py keeps the
# tests that share a private service on one worker.
workers=(-n "${BALDUR_TEST_WORKERS:-2}")
echo "run-tests: .venv/bin/python -m pytest -q ${workers[*]} --durations=15 --durations-min=15 tests ${extra[*]} $*" >&2
.venv/bin/python -m pytest -q "${workers[@]}" --durations=15 --durations-min=15 tests "${extra[@]}" "$@"
rc=$?
if [[ $rc -eq 0 && $lint_rc -ne 0 ]]; then
    echo "run-tests: the tests passed but the lint failed" >&2
    rc=1
fi
exit $rc
