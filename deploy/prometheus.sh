#!/usr/bin/env bash
# Prometheus for the alert rules' checks and the end-to-end alert test (tests/integration/test_alerts.py).
#
#   deploy/prometheus.sh install   Debian's `prometheus` package (/usr/bin/prometheus and
#                                  /usr/bin/promtool) when either is missing; quick when present.
#   deploy/prometheus.sh check     promtool check rules + promtool test rules on deploy/prometheus/.
#
# The package would start a system service listening on every interface (:9090) and pull in the
# node exporter (:9100) as a recommendation: it is installed --no-install-recommends and with a
# policy-rc.d that forbids starting services for the duration of the install (an existing one is
# left as it is). Tests start their own Prometheus on 127.0.0.1 only.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RULES="$ROOT/deploy/prometheus"

log() { echo "prometheus.sh: $*" >&2; }

installed() { [[ -x /usr/bin/prometheus && -x /usr/bin/promtool ]]; }

# Whether something listens on TCP port $1 (any address), read from /proc: no iproute2 needed.
listening() {
    local hex file
    printf -v hex '%04X' "$1"
    for file in /proc/net/tcp /proc/net/tcp6; do
        [[ -r "$file" ]] || continue
        # local_address is column 2 (ADDR:PORT in hex), st is column 4 (0A = LISTEN).
        while read -r _ local _ state _; do
            [[ "$state" == 0A && "${local##*:}" == "$hex" ]] && return 0
        done <"$file"
    done
    return 1
}

install() {
    if installed; then
        return 0
    fi
    [[ $EUID -eq 0 ]] || { log "prometheus is missing and installing it needs root (apt-get install prometheus)"; return 1; }
    local policy=/usr/sbin/policy-rc.d ours= rc=0
    if [[ ! -e "$policy" ]]; then
        # 101: "action forbidden" for invoke-rc.d, so the package's service is not started.
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
        # shellcheck disable=SC2064  # the path is fixed now, on purpose
        trap "rm -f '$policy'" EXIT
    fi
    log "installing Debian's prometheus package (prometheus, promtool) with apt-get"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0)
    {
        "${apt[@]}" install --no-install-recommends prometheus \
            || { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends prometheus; }
    } >&2 || rc=1
    if [[ -n "$ours" ]]; then
        rm -f "$policy"
        trap - EXIT
    fi
    if [[ $rc -ne 0 ]] || ! installed; then
        log "apt-get install prometheus failed"
        return 1
    fi
    # The package enables its service for the next boot (0.0.0.0:9090): not on a test machine.
    # (What `systemctl disable` does, also on a machine not booted with systemd.)
    rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service
    if listening 9090; then
        # Not started by this install (policy-rc.d forbids it); say so rather than kill it.
        log "warning: something listens on port 9090 (a system Prometheus?); the tests use 19090-19099"
    fi
    log "installed $(/usr/bin/prometheus --version 2>&1 | head -n 1)"
}

check() {
    installed || install || return 1
    /usr/bin/promtool check rules "$RULES/alerts.yml" && (cd "$RULES" && /usr/bin/promtool test rules alerts_test.yml)
}

case "${1:-}" in
    install) install ;;
    check) check ;;
    *)
        echo "usage: $0 install|check" >&2
        exit 2
        ;;
esac
