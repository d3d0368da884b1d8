#!/usr/bin/env bash
# The headless browser of the viewer's browser tests (tests/integration/test_viewer_browser.py):
# Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver).
#
#   deploy/browser.sh install   install them with apt-get when either is missing; quick when present.
#
# The tests drive it with Selenium pointed at these two files, so Selenium never downloads a
# browser or a driver of its own.
set -uo pipefail

log() { echo "browser.sh: $*" >&2; }

installed() { [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; }

install() {
    installed && return 0
    [[ $EUID -eq 0 ]] || { log "chromium is missing and installing it needs root (apt-get install chromium chromium-driver)"; return 1; }
    log "installing Debian's chromium and chromium-driver with apt-get"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0)
    {
        "${apt[@]}" install --no-install-recommends chromium chromium-driver \
            || { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends chromium chromium-driver; }
    } >&2
    installed || { log "apt-get install chromium chromium-driver failed"; return 1; }
}

case "${1:-}" in
    install) install ;;
    *) echo "usage: deploy/browser.sh install" >&2; exit 2 ;;
esac
