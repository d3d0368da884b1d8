#!/usr/bin/env bash
# The local service stack: Kafka (127.0.0.1:29092) + PostgreSQL (127.0.0.1:25432).
#
#   deploy/stack.sh up      venv + kafka install/start + postgres install/start
#                           writes the services THIS invocation started (one per line) to
#                           .local/started-by-up (empty when both were already running)
#   deploy/stack.sh down    stop both (whoever started them)
#   deploy/stack.sh env     print the export lines the tests and the demo use (the ports
#                           honour BALDUR_KAFKA_PORT and BALDUR_PG_PORT, like the scripts):
#                           BALDUR_SQL_DSN is the chainer role's, which owns nothing; only
#                           `init` uses the owner's, BALDUR_SQL_OWNER_DSN (bootstrap.sql)
#   deploy/stack.sh status  one line per service; exit 0 only when both are healthy
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
D="$ROOT/deploy"
STARTED="$ROOT/.local/started-by-up"
SERVICES=(kafka postgres)

# The ports follow the same overrides as deploy/kafka.sh and deploy/postgres.sh.
cmd_env() {
    local kafka_port="${BALDUR_KAFKA_PORT:-29092}" pg_port="${BALDUR_PG_PORT:-25432}"
    [[ "$kafka_port" =~ ^[0-9]+$ && "$pg_port" =~ ^[0-9]+$ ]] || {
        echo "stack: BALDUR_KAFKA_PORT and BALDUR_PG_PORT must be port numbers" >&2
        return 2
    }
    cat <<EOF
export BALDUR_KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port
export BALDUR_SQL_DSN=postgresql://baldur_chainer:baldur-chainer-local@127.0.0.1:$pg_port/baldur_audit
export BALDUR_SQL_OWNER_DSN=postgresql://baldur:baldur-local@127.0.0.1:$pg_port/baldur_audit
export BALDUR_SQL_READER_DSN=postgresql://baldur_reader:baldur-reader-local@127.0.0.1:$pg_port/baldur_audit
export BALDUR_SQL_CHAINER_ROLE=baldur_chainer
export BALDUR_SQL_READER_ROLE=baldur_reader
export BALDUR_SQL_OPERATOR_ROLE=baldur_operator
export BALDUR_TEST_ADMIN_DSN=postgresql://postgres:baldur-local-admin@127.0.0.1:$pg_port/postgres
EOF
}

cmd_up() {
    local t0=$SECONDS s
    mkdir -p "$ROOT/.local"
    : >"$STARTED"
    "$D/venv.sh"
    "$D/kafka.sh" install
    "$D/postgres.sh" install
    for s in "${SERVICES[@]}"; do
        if "$D/$s.sh" status >/dev/null 2>&1; then
            echo "stack: $s already running" >&2
            continue
        fi
        # Record before starting: a start that fails half-way may leave a process behind,
        # and whoever reads this file (deploy/run-tests.sh) must stop it.
        echo "$s" >>"$STARTED"
        "$D/$s.sh" start
    done
    echo "stack: up in $((SECONDS - t0)) s (started by this run: $(paste -sd' ' "$STARTED" | sed 's/^$/none/'))" >&2
}

cmd_down() {
    local rc=0 i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        "$D/${SERVICES[i]}.sh" stop || rc=1
    done
    rm -f "$STARTED"
    return $rc
}

cmd_status() {
    local rc=0 s
    for s in "${SERVICES[@]}"; do
        "$D/$s.sh" status || rc=1
    done
    return $rc
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    status) cmd_status ;;
    *) echo "usage: $0 {up|down|env|status}" >&2; exit 2 ;;
esac
