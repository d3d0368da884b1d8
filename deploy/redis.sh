#!/usr/bin/env bash
# redis-server for the Redis buffer's tests (tests/unit/producers/buffer/, tests/faults/test_redis_buffer.py).
#
#   deploy/redis.sh install   Debian's `redis-server` package (/usr/bin/redis-server) when it is
#                             missing; quick when present.
#
# The package would start a system redis on 127.0.0.1:6379 and enable it for the next boot: it
# is installed --no-install-recommends with a policy-rc.d that forbids starting services for the
# duration of the install (an existing one is left as it is), and its boot link is removed. Tests
# start their own redis-server on 127.0.0.1:16379-16389 in a temporary folder, stopped by PID.
set -uo pipefail

log() { echo "redis.sh: $*" >&2; }

installed() { [[ -x /usr/bin/redis-server ]]; }

install() {
    if installed; then
        return 0
    fi
    [[ $EUID -eq 0 ]] || { log "redis-server is missing and installing it needs root (apt-get install redis-server)"; return 1; }
    local policy=/usr/sbin/policy-rc.d ours= rc=0
    if [[ ! -e "$policy" ]]; then
        # 101: "action forbidden" for invoke-rc.d, so the package's service is not started.
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
        # shellcheck disable=SC2064  # the path is fixed now, on purpose
        trap "rm -f '$policy'" EXIT
    fi
    log "installing Debian's redis-server package with apt-get"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0)
    {
        "${apt[@]}" install --no-install-recommends redis-server \
            || { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends redis-server; }
    } >&2 || rc=1
    if [[ -n "$ours" ]]; then
        rm -f "$policy"
        trap - EXIT
    fi
    if [[ $rc -ne 0 ]] || ! installed; then
        log "apt-get install redis-server failed"
        return 1
    fi
    # What `systemctl disable redis-server` does, also on a machine not booted with systemd.
    rm -f /etc/systemd/system/multi-user.target.wants/redis-server.service /etc/systemd/system/redis.service
    log "installed $(/usr/bin/redis-server --version 2>&1 | head -n 1)"
}

case "${1:-}" in
    install) install ;;
    *)
        echo "usage: $0 install" >&2
        exit 2
        ;;
esac
