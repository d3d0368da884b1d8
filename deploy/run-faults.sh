#!/usr/bin/env bash
# shellcheck disable=SC2317  # on_signal is reached only through the traps
# `make faults`: the whole fault campaign at full scale, then the soak and the tamper matrix
# (BALDUR_TAMPER=0 skips it; BALDUR_TAMPER_TRIALS, BALDUR_TAMPER_SEED).
#
#   deploy/run-faults.sh [pytest args]     e.g. deploy/run-faults.sh -k kill9
#   deploy/run-faults.sh --setup-only      only the set-up below (what the quick subset in
#                                          `make test` needs too: kcat, the tools jar)
#
# Set-up: the venv, Kafka's jars (with the kafka-consumer-groups tool) and the PostgreSQL
# binaries, and kcat (Debian's package) when it is missing. The scenarios and the soak run on
# the campaign's PRIVATE broker and cluster (127.0.0.1:19092 / 15432, see tests/faults/conftest.py),
# which pytest and the soak (tests/campaigns/soak.py) start and stop themselves; the shared stack
# (make up) is neither needed nor touched. Results: .local/results/faults.jsonl (one row per
# scenario run), .local/results/soak.json, and a table in .local/results/faults-summary.md.
#
# Environment: BALDUR_FAULTS_SCALE (default full), BALDUR_FAULTS_SEED (random choices),
#   BALDUR_SOAK_EVENTS (default 1000000), BALDUR_SOAK_PRODUCERS (producer processes, default 2),
#   BALDUR_SOAK_TIME_LIMIT (s, default 3600),
#   BALDUR_SOAK=0 to skip the soak.
# Exits non-zero when a scenario or the soak failed (or the set-up did).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT" || exit 1
D="$ROOT/deploy"
RESULTS="$ROOT/.local/results"
PY="$ROOT/.venv/bin/python"

log() { echo "run-faults: $*" >&2; }

on_signal() {
    log "interrupted; pytest and the soak stop the services they started"
    exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

"$D/venv.sh" || exit 1
"$D/kafka.sh" install || { log "Kafka classpath could not be materialised"; exit 1; }
"$D/postgres.sh" install || { log "PostgreSQL binaries missing"; exit 1; }
if ! command -v kcat >/dev/null 2>&1; then
    [[ $EUID -eq 0 ]] || { log "kcat is missing and installing it needs root (apt-get install kcat)"; exit 1; }
    log "installing kcat with apt-get (the poison scenario's foreign client)"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat; } >&2 \
        || { log "apt-get install kcat failed"; exit 1; }
fi

if [[ "${1:-}" == --setup-only ]]; then
    log "set-up done (kcat $(command -v kcat), Kafka tools jar, PostgreSQL binaries)"
    exit 0
fi

mkdir -p "$RESULTS"
# One campaign, one results file: the previous one is kept beside it.
[[ -f "$RESULTS/faults.jsonl" ]] && mv -f "$RESULTS/faults.jsonl" "$RESULTS/faults.jsonl.prev"
[[ -f "$RESULTS/soak.json" ]] && mv -f "$RESULTS/soak.json" "$RESULTS/soak.json.prev"

export BALDUR_FAULTS_SCALE="${BALDUR_FAULTS_SCALE:-full}"
t0=$SECONDS
log "scenarios at scale $BALDUR_FAULTS_SCALE: $PY -m pytest -q -p no:cacheprovider tests/faults $*"
"$PY" -m pytest -q -p no:cacheprovider tests/faults "$@"
scenarios_rc=$?
log "scenarios: exit $scenarios_rc after $((SECONDS - t0)) s"

soak_rc=0
if [[ "${BALDUR_SOAK:-1}" != 0 ]]; then
    t1=$SECONDS
    log "soak: ${BALDUR_SOAK_EVENTS:-1000000} events"
    "$PY" -m tests.campaigns.soak --private --events "${BALDUR_SOAK_EVENTS:-1000000}" \
        --producers "${BALDUR_SOAK_PRODUCERS:-2}" --time-limit "${BALDUR_SOAK_TIME_LIMIT:-3600}" \
        --out "$RESULTS/soak.json"
    soak_rc=$?
    log "soak: exit $soak_rc after $((SECONDS - t1)) s"
fi

# The randomized tamper matrix runs on the shared stack (started here if it is not running,
# and then stopped again): one base ledger, 250 seeded trials on template copies.
tamper_rc=0
if [[ "${BALDUR_TAMPER:-1}" != 0 ]]; then
    t2=$SECONDS
    rm -f "$ROOT/.local/started-by-up"
    if "$D/stack.sh" up >&2; then
        started_here=()
        [[ -f "$ROOT/.local/started-by-up" ]] && mapfile -t started_here <"$ROOT/.local/started-by-up"
        ( eval "$("$D/stack.sh" env)" && "$PY" -m tests.campaigns.tamper_matrix \
            --trials "${BALDUR_TAMPER_TRIALS:-250}" --seed "${BALDUR_TAMPER_SEED:-1}" \
            --out "$RESULTS/tamper.json" )
        tamper_rc=$?
        for service in "${started_here[@]}"; do
            [[ -n "$service" ]] && "$D/$service.sh" stop >&2
        done
    else
        tamper_rc=1
    fi
    log "tamper matrix: exit $tamper_rc after $((SECONDS - t2)) s"
fi

"$PY" "$D/tools/faults_summary.py" "$RESULTS" | tee "$RESULTS/faults-summary.md"

if [[ $scenarios_rc -ne 0 || $soak_rc -ne 0 || $tamper_rc -ne 0 ]]; then
    log "FAILED (scenarios exit $scenarios_rc, soak exit $soak_rc, tamper matrix exit $tamper_rc);" \
        "results in ${RESULTS#"$ROOT"/}"
    exit 1
fi
log "campaign passed in $((SECONDS - t0)) s; results in ${RESULTS#"$ROOT"/}"
