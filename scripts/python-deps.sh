#!/usr/bin/env bash
# Installs what the Python example model (examples/digits) needs — Debian's
# python3, python3-numpy and python3-sklearn — when /usr/bin/python3 cannot
# import them. The example and its e2e test use /usr/bin/python3 (Debian's),
# never whatever python3 comes first on PATH. Idempotent: a machine that has
# them does nothing. Needs root and apt-get to install; otherwise it says what
# to install and fails.
set -euo pipefail
PY=/usr/bin/python3
have() { [ -x "$PY" ] && "$PY" -c 'import numpy, sklearn' >/dev/null 2>&1; }
if have; then
	exit 0
fi
pkgs="python3 python3-numpy python3-sklearn"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "python-deps: $PY cannot import numpy and sklearn; install the Debian packages: apt-get install $pkgs" >&2
	exit 1
fi
echo "python-deps: installing $pkgs (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
# The package lists may be missing or stale on a fresh machine: update once
# if the first try fails. Another apt-get may hold the lock: wait for it.
install() { apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $pkgs >/dev/null; }
install || { apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && install; }
if ! have; then
	echo "python-deps: installed $pkgs but $PY still cannot import numpy and sklearn" >&2
	exit 1
fi
echo "python-deps: $("$PY" -c 'import numpy, sklearn; print("numpy", numpy.__version__, "sklearn", sklearn.__version__)')"
