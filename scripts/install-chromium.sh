#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the listener page's
# real-browser test (tests/tests/listener_page.rs). Idempotent: nothing
# happens where both are installed already.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
echo "setlist: installing chromium and chromium-driver from Debian (once)" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
