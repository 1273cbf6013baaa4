#!/usr/bin/env bash
# Installs the distribution's chromium when missing, for the dashboard's browser tests (tests/server/test_dashboard.py).
#
# Playwright for Python (the dev extra) drives this binary through `executable_path`; no browser is
# downloaded (`playwright install` is never run). Idempotent: an installed chromium is only checked.
# Prints nothing on stdout; progress goes to stderr.
set -euo pipefail

log() { echo "chromium-setup: $*" >&2; }
die() { echo "chromium-setup: ERROR: $*" >&2; exit 1; }

if ! command -v chromium >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "chromium is not installed; run as root (or apt-get install chromium) first"
    log "installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # fonts-dejavu-core: the page's text in the screenshots, whatever else the machine has.
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
# It must start headless here (as root it needs --no-sandbox, which Playwright passes too).
dom=$(chromium --headless --no-sandbox --disable-gpu --dump-dom 'data:text/html,<p>ok</p>' 2>/dev/null || true)
if [[ $dom != *'<p>ok</p>'* ]]; then
    die "chromium is installed but does not render a page headless: $(chromium --version 2>&1 | tail -n 1)"
fi
log "$(chromium --version 2>/dev/null)"
