# Container targets; the top-level Makefile does `include deploy/make.mk`.
# Paths are relative to the repository root (where make runs).
#
#   make bins          static linux binaries of every program + nats-server -> bin/
#   make images        bins, then the jetserve/*:dev images (FROM scratch)
#   make compose-up    images, then docker compose up -d (project "jetserve")
#   make compose-down  docker compose down -v (removes the NATS volume too)
#   make compose-test  scripts/compose-smoke.sh (own project name, always torn down)
#   make compose-ha-test  scripts/compose-ha-smoke.sh: the HA profile
#                      (docker-compose.ha.yml) loses a NATS node under traffic
#
# Compose is `docker compose` when available, else `docker-compose`
# (scripts/compose.sh picks).

COMPOSE_PROJECT_NAME ?= jetserve
export COMPOSE_PROJECT_NAME

.PHONY: bins images compose-up compose-down compose-test compose-ha-test

bins:
	scripts/build-bins.sh bin

images:
	scripts/build-images.sh

compose-up: images
	scripts/compose.sh up -d --no-build
	@echo "jetserve: http://127.0.0.1:$${SERVE_HTTP_PORT:-8000}  admin: http://127.0.0.1:$${SERVE_ADMIN_PORT:-8265}  (scripts/compose.sh logs -f)"

compose-down:
	scripts/compose.sh down -v --remove-orphans

compose-test:
	scripts/compose-smoke.sh

compose-ha-test:
	scripts/compose-ha-smoke.sh
