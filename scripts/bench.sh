#!/usr/bin/env bash
# make bench: the fleet (ingress → router → replica, each its own process)
# side by side in one run with a raw net/http handler and raw HTTP → NATS
# request-reply → responder, at concurrency 1 and 64; prints p50/p99,
# requests/s and the ratios. wrk (Debian) is the c=64 load generator when it
# is installed: a Go client at 64 costs more CPU than the server on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "bench: installing wrk (Debian package)"
		(apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }) ||
			echo "bench: wrk unavailable, using the Go load generator"
	else
		echo "bench: wrk not installed (apt-get install wrk), using the Go load generator"
	fi
fi
cd e2e
exec go test -run '^$' -bench 'FleetVsRaw' -benchtime "${BENCHTIME:-3000x}" -count=1 -timeout 20m ./
