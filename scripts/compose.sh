#!/usr/bin/env bash
# Run Docker Compose on the repository's docker-compose.yml with whichever
# CLI this machine has: the `docker compose` plugin (v2) when
# `docker compose version` works, else the standalone `docker-compose` (v1).
#
#   scripts/compose.sh up -d
#   scripts/compose.sh logs -f ingress
#   COMPOSE_PROJECT_NAME=mine scripts/compose.sh down -v
#
# The project name defaults to "jetserve" (not the checkout's directory name).
# COMPOSE_OVERRIDES="a.yml b.yml" adds override files (paths relative to the
# repository root), e.g. examples/quickstart/docker-compose.quickstart.yml.
# COMPOSE_BASE replaces docker-compose.yml, e.g. docker-compose.ha.yml (the
# HA profile: a 3-node NATS cluster, every service twice).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-jetserve}

if docker compose version >/dev/null 2>&1; then
	compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
	compose=(docker-compose)
else
	echo "compose.sh: neither 'docker compose' nor 'docker-compose' is installed" >&2
	exit 127
fi

files=(-f "$root/${COMPOSE_BASE:-docker-compose.yml}")
for o in ${COMPOSE_OVERRIDES:-}; do files+=(-f "$root/$o"); done
exec "${compose[@]}" --project-directory "$root" "${files[@]}" "$@"
