#!/usr/bin/env bash
# Local PostgreSQL 15 cluster for development and tests, owned by this repository.
#
#   deploy/postgres.sh install   make sure the PostgreSQL 15 server binaries exist (apt-get if not)
#   deploy/postgres.sh start     initdb once, start, create roles/database once
#   deploy/postgres.sh stop [fast|immediate]   pg_ctl stop (default fast; immediate = crash-like)
#   deploy/postgres.sh status    exit 0 if the server runs and accepts connections
#
# Cluster:  .local/pg/data   port 25432, listen_addresses=127.0.0.1 (TCP), socket dir .local/pg/run
# Log:      .local/pg/postgres.log
# Users:    postgres / baldur-local-admin (superuser), baldur / baldur-local (LOGIN CREATEDB)
# Database: baldur_audit owned by baldur
#
# initdb and postgres refuse to run as root, so when this script runs as root (CI, sessions) the
# server runs as the `postgres` OS user (created by Debian's postgresql-common package) via runuser,
# .local/pg is chowned to it, and every parent directory of .local/pg is made traversable
# (chmod o+x) if the postgres user cannot already reach it. Run as a normal user, the cluster
# simply belongs to that user.
#
# TLS only (tests/support/secured.py): BALDUR_PG_SSL_CERT and BALDUR_PG_SSL_KEY (PEM files) turn
# on ssl with that server certificate, and pg_hba.conf then has `hostssl` lines only, so a
# plaintext TCP connection is refused; with BALDUR_PG_SSL_CA as well, every TCP client must also
# present a certificate from that CA whose CN is its user name (clientcert=verify-full). The
# files are copied into the data directory on every start.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
LOCAL="$ROOT/.local"
# A second, independent cluster (fault tests restart theirs) sets BALDUR_PG_HOME and BALDUR_PG_PORT.
PGDIR="${BALDUR_PG_HOME:-$LOCAL/pg}"
DATA="$PGDIR/data"
RUN="$PGDIR/run"
LOG="$PGDIR/postgres.log"
BOOTSTRAP_SQL="$ROOT/deploy/postgres/bootstrap.sql"
BOOTSTRAP_MARK="$PGDIR/bootstrap.done"
PG_MAJOR=15
PGBIN="${PGBIN:-/usr/lib/postgresql/$PG_MAJOR/bin}"
HOST=127.0.0.1
PORT="${BALDUR_PG_PORT:-25432}"
SUPERUSER_PASSWORD=baldur-local-admin
START_TIMEOUT="${PG_START_TIMEOUT:-60}"
SSL_CERT="${BALDUR_PG_SSL_CERT:-}"
SSL_KEY="${BALDUR_PG_SSL_KEY:-}"
SSL_CA="${BALDUR_PG_SSL_CA:-}"

log() { echo "postgres: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ $EUID -eq 0 ]]; then
    PGUSER_OS=postgres
    as_pg() { runuser -u "$PGUSER_OS" -- "$@"; }
else
    PGUSER_OS="$(id -un)"
    as_pg() { "$@"; }
fi

# ---------------------------------------------------------------- install

cmd_install() {
    if [[ -x "$PGBIN/initdb" && -x "$PGBIN/pg_ctl" && -x "$PGBIN/postgres" ]]; then
        return 0
    fi
    [[ $EUID -eq 0 ]] || die "$PGBIN/initdb missing; install postgresql-$PG_MAJOR (needs root)"
    log "installing postgresql-$PG_MAJOR with apt-get"
    # Keep the package from starting its own default cluster on 5432: invoke-rc.d honours
    # policy-rc.d (exit 101 = "not allowed"). Only a policy file we created is removed again.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
    if [[ $rc -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR" || rc=$?
    fi
    [[ $own_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    [[ $rc -eq 0 ]] || die "apt-get install postgresql-$PG_MAJOR failed"
    [[ -x "$PGBIN/initdb" ]] || die "$PGBIN/initdb still missing after install"
}

# ---------------------------------------------------------------- helpers

# Make every directory from .local/pg up to / traversable by the server's OS user.
ensure_traversable() {
    [[ $EUID -eq 0 ]] || return 0
    local d="$PGDIR"
    while [[ "$d" != "/" ]]; do
        d="$(dirname "$d")"
        if ! runuser -u "$PGUSER_OS" -- test -x "$d"; then
            log "making $d traversable for the $PGUSER_OS user (chmod o+x)"
            chmod o+x "$d"
        fi
    done
}

prepare_dirs() {
    mkdir -p "$PGDIR" "$RUN"
    if [[ $EUID -eq 0 ]]; then
        chown "$PGUSER_OS:" "$PGDIR" "$RUN"
        [[ -e "$LOG" ]] && chown "$PGUSER_OS:" "$LOG"
    fi
    chmod 700 "$RUN"
    ensure_traversable
}

is_running() {
    [[ -f "$DATA/PG_VERSION" ]] || return 1
    as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

accepting() {
    "$PGBIN/pg_isready" -q -h "$HOST" -p "$PORT" -t 2 >/dev/null 2>&1
}

# copy_in SRC NAME MODE: SRC into the data directory as NAME, owned by the server's OS user.
copy_in() {
    install -m "$3" "$1" "$DATA/$2" || die "cannot copy $1 into the data directory"
    if [[ $EUID -eq 0 ]]; then chown "$PGUSER_OS:" "$DATA/$2"; fi
}

# The TLS settings for baldur.conf (none without BALDUR_PG_SSL_CERT), after copying the files in.
ssl_config() {
    [[ -n "$SSL_CERT" ]] || return 0
    [[ -n "$SSL_KEY" ]] || die "BALDUR_PG_SSL_CERT needs BALDUR_PG_SSL_KEY"
    copy_in "$SSL_CERT" server.crt 644
    copy_in "$SSL_KEY" server.key 600
    printf '%s\n' "ssl = on" "ssl_cert_file = 'server.crt'" "ssl_key_file = 'server.key'" \
        "ssl_min_protocol_version = 'TLSv1.2'"
    if [[ -n "$SSL_CA" ]]; then
        copy_in "$SSL_CA" root.crt 644
        echo "ssl_ca_file = 'root.crt'"
    fi
}

write_config() {
    # Our settings live in a separate file included from postgresql.conf, rewritten on every start.
    local conf="$DATA/baldur.conf" ssl host_line="host    all       all   127.0.0.1/32   scram-sha-256"
    ssl="$(ssl_config)"
    if [[ -n "$SSL_CERT" ]]; then
        host_line="hostssl all       all   127.0.0.1/32   scram-sha-256${SSL_CA:+ clientcert=verify-full}"
    fi
    as_pg tee "$conf.tmp" >/dev/null <<EOF
# Generated by deploy/postgres.sh on every start; edit the script, not this file.
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$RUN'
max_connections = 200
shared_buffers = 256MB
password_encryption = scram-sha-256
# test box, but keep durability semantics real
fsync = on
synchronous_commit = on
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
$ssl
EOF
    as_pg mv "$conf.tmp" "$conf"
    grep -q "^include_if_exists = 'baldur.conf'" "$DATA/postgresql.conf" \
        || echo "include_if_exists = 'baldur.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
    # TCP only from 127.0.0.1 with SCRAM (and TLS only, when configured); the unix socket
    # (owner-only directory) is trusted for bootstrap.
    as_pg tee "$DATA/pg_hba.conf" >/dev/null <<EOF
# Generated by deploy/postgres.sh on every start.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
$host_line
EOF
}

init_cluster() {
    [[ -f "$DATA/PG_VERSION" ]] && return 0
    local tmp="$PGDIR/data.init" pwfile="$PGDIR/.pwfile" t0=$SECONDS
    log "initdb in ${DATA#"$ROOT"/}"
    rm -rf "$tmp"
    as_pg mkdir -m 700 "$tmp"
    (umask 077; printf '%s\n' "$SUPERUSER_PASSWORD" >"$pwfile")
    [[ $EUID -eq 0 ]] && chown "$PGUSER_OS:" "$pwfile"
    if ! as_pg "$PGBIN/initdb" -D "$tmp" -U postgres --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C >>"$LOG.initdb" 2>&1; then
        rm -f "$pwfile"
        tail -n 30 "$LOG.initdb" >&2
        die "initdb failed (log: $LOG.initdb)"
    fi
    rm -f "$pwfile"
    mv "$tmp" "$DATA"
    rm -f "$BOOTSTRAP_MARK"
    log "initdb done in $((SECONDS - t0)) s"
}

bootstrap_roles() {
    local want
    want="$(sha256sum "$BOOTSTRAP_SQL" | cut -d' ' -f1)"
    if [[ -f "$BOOTSTRAP_MARK" && "$(<"$BOOTSTRAP_MARK")" == "$want" ]]; then
        return 0
    fi
    log "creating roles and database (deploy/postgres/bootstrap.sql)"
    # Over the unix socket as the OS user that owns the cluster (local = trust).
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U postgres -d postgres \
        -f - <"$BOOTSTRAP_SQL" >&2 || die "bootstrap SQL failed"
    echo "$want" >"$BOOTSTRAP_MARK"
}

# ---------------------------------------------------------------- commands

cmd_start() {
    cmd_install
    prepare_dirs
    init_cluster
    if is_running; then
        if accepting; then
            bootstrap_roles
            log "already running on $HOST:$PORT"
            return 0
        fi
    fi
    if ! is_running && (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
        die "port $PORT on $HOST is already in use by another process"
    fi
    write_config
    if ! is_running; then
        local t0=$SECONDS
        log "starting (log: ${LOG#"$ROOT"/})"
        # keep one previous log once it passes 20 MB
        if [[ -f "$LOG" && $(stat -c %s "$LOG") -gt 20000000 ]]; then mv -f "$LOG" "$LOG.1"; fi
        [[ -e "$LOG" ]] || as_pg touch "$LOG"
        if ! as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$START_TIMEOUT" start >/dev/null; then
            tail -n 30 "$LOG" >&2
            as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
            die "server failed to start (log: $LOG)"
        fi
        log "ready on $HOST:$PORT after $((SECONDS - t0)) s"
    fi
    local i
    for ((i = 0; i < 60; i++)); do accepting && break; sleep 0.5; done
    accepting || die "server runs but does not accept TCP connections on $HOST:$PORT"
    bootstrap_roles
}

cmd_stop() {
    if ! is_running; then
        log "not running"
        return 0
    fi
    log "stopping (pid $(head -n1 "$DATA/postmaster.pid" 2>/dev/null || echo '?'))"
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m "${1:-fast}" -w -t 60 stop >/dev/null
    log "stopped"
}

cmd_status() {
    if is_running && accepting; then
        echo "postgres: running (pid $(head -n1 "$DATA/postmaster.pid")) on $HOST:$PORT"
        return 0
    fi
    if is_running; then
        echo "postgres: process alive but not accepting connections on $HOST:$PORT"
    else
        echo "postgres: not running"
    fi
    return 1
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop)
        case "${2:-fast}" in fast | immediate | smart) cmd_stop "${2:-fast}" ;;
            *) echo "usage: $0 stop [fast|immediate|smart]" >&2; exit 2 ;; esac ;;
    status) cmd_status ;;
    *) echo "usage: $0 {install|start|stop|status}" >&2; exit 2 ;;
esac
