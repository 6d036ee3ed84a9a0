#!/usr/bin/env bash
# The UI test drives Debian's headless Chromium (Playwright's own browser download cannot run here).
# Install it when missing and we may; otherwise say exactly what to install.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser test (apt-get)..."
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "The browser test needs Chromium: install Debian's 'chromium' package (sudo apt-get install chromium)." >&2
exit 1
