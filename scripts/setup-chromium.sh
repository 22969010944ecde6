#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the report tests (Debian packages chromium, chromium-driver).
# Does nothing when both are installed.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
log=$(mktemp)
echo "installing chromium and chromium-driver (apt-get; log: $log)"
{
  $sudo apt-get update -q &&
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver
} > "$log" 2>&1 || { tail -n 20 "$log"; echo "chromium install failed; full log: $log" >&2; exit 1; }
rm -f "$log"
