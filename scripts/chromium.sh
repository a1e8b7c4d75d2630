#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser test
# (cmd/jetserve TestDashboardInBrowser, driven with chromedp). CI runs it
# before `make test`; a machine without it fails that test unless
# JETSERVE_SKIP_BROWSER=1 is set.
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
	if command -v "$b" >/dev/null 2>&1; then
		echo "chromium: $("$b" --version 2>/dev/null || echo "$b")"
		exit 0
	fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "chromium: not installed; run as root on Debian (apt-get install chromium), or set JETSERVE_SKIP_BROWSER=1" >&2
	exit 1
fi
echo "chromium: installing (Debian package)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium >/dev/null 2>&1 ||
	{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
echo "chromium: $(chromium --version)"
