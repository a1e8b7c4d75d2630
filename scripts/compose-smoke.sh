#!/usr/bin/env bash
# Smoke test of the containers: build the images, start docker-compose.yml
# under a throw-away project name, and wait (bounded) until
#   1. the ingress answers GET /-/healthz,
#   2. the example route answers POST $SMOKE_PATH with $SMOKE_BODY with 200,
#   3. the admin API shows every application RUNNING,
#   auth is on (deploy/auth's NATS users, the generated HTTP keys, in a
#   throw-away SERVE_SECRETS directory): a request without the key is 401,
#   4. with the quickstart override (examples/quickstart, a user's own worker
#      image and `deploy --merge`): POST /greet answers 200 beside the example,
#      and re-running the deployers (`up -d --scale worker=2`, as the compose
#      file recommends) leaves both applications in place.
# On failure it prints the containers and their logs. It always tears the
# project down (`down -v`: containers, network and the NATS volume).
#
#   scripts/compose-smoke.sh
#
# Environment:
#   SMOKE_PATH     route to call            (default /text/analyze)
#   SMOKE_BODY     JSON body to POST        (default {"text": "..."})
#   SMOKE_TIMEOUT  seconds for all waiting  (default 120)
#   SMOKE_KEEP=1   leave the project running (print how to stop it)
#   SKIP_BUILD=1   use the jetserve/*:dev images already built
#   SERVE_CONFIG   serve config for the deployer (default ./examples/config.yaml)
#   SMOKE_QUICKSTART=0  skip the quickstart override (4.)
# Host ports: 8000, 8265, 4222 and 8222 when free, else the next free ones
# (SERVE_HTTP_PORT etc. force them).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n ${SERVE_CONFIG:-} && $SERVE_CONFIG != /* ]]; then
	SERVE_CONFIG=$PWD/$SERVE_CONFIG # relative to where the script was started
fi
cd "$root"

SMOKE_PATH=${SMOKE_PATH:-/text/analyze}
SMOKE_BODY=${SMOKE_BODY:-'{"text": "NATS JetStream keeps every request durable. The fleet serves models quickly and I love it."}'}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-120}
export COMPOSE_PROJECT_NAME=jetserve-smoke-$$-$RANDOM
SMOKE_NAME=smoke
# shellcheck source=lib/smoke.sh
source "$root/scripts/lib/smoke.sh"
smoke_secrets

command -v curl >/dev/null || die "curl is required"
config=${SERVE_CONFIG:-./examples/config.yaml}
# A missing bind-mount source would make Docker create a directory there.
[[ -f $config ]] || die "serve config $config does not exist (set SERVE_CONFIG)"
export SERVE_CONFIG=$config

pick_port SERVE_HTTP_PORT 8000
pick_port SERVE_ADMIN_PORT 8265
pick_port SERVE_NATS_PORT 4222
pick_port SERVE_NATS_MONITOR_PORT 8222
http=http://127.0.0.1:$SERVE_HTTP_PORT
admin=http://127.0.0.1:$SERVE_ADMIN_PORT

quickstart=${SMOKE_QUICKSTART:-1}
if [[ $quickstart == 1 ]]; then
	export COMPOSE_OVERRIDES="examples/quickstart/docker-compose.quickstart.yml"
fi

ok=
SMOKE_OUT=$(mktemp)
admin_status() {
	log "---- admin status ----"
	curl -sS --max-time 5 -H "Authorization: Bearer ${admin_key:-}" "$admin/api/serve/applications"
	echo
}
cleanup() {
	local rc=$?
	set +e
	rm -f "$SMOKE_OUT"
	smoke_finish "$rc" 200 admin_status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z ${SKIP_BUILD:-} ]]; then
	log "building binaries and images"
	scripts/build-images.sh
	if [[ $quickstart == 1 ]]; then
		log "building the quickstart worker (its own module, GOWORK=off) and image"
		(cd examples/quickstart && CGO_ENABLED=0 GOWORK=off go build -trimpath -ldflags='-s -w' -o bin/worker ./cmd/worker)
		${DOCKER:-docker} build -q -t quickstart/worker:dev examples/quickstart >/dev/null
	fi
fi

log "up: project $COMPOSE_PROJECT_NAME, http :$SERVE_HTTP_PORT, admin :$SERVE_ADMIN_PORT, nats :$SERVE_NATS_PORT/:$SERVE_NATS_MONITOR_PORT"
# --no-build: a missing image is an error here, never a silent build.
compose up -d --no-build

deadline=$((SECONDS + SMOKE_TIMEOUT))
healthz() { curl -fsS --max-time 2 -o /dev/null "$http/-/healthz" 2>/dev/null; }
route() { post_json "$http" "$SMOKE_PATH" "$SMOKE_BODY"; }

load_keys
wait_for "ingress $http/-/healthz" healthz
wait_for "POST $SMOKE_PATH -> 200" route
check_auth_refused "$http" "$admin" "$SMOKE_PATH" "$SMOKE_BODY"
log "response: $(head -c 500 "$SMOKE_OUT")"
wait_for "every application RUNNING ($admin/api/serve/applications)" apps_running "$admin"

if [[ $quickstart == 1 ]]; then
	greet() {
		post_json "$http" /greet '{"name":"compose"}' && grep -q 'Hello, compose!' "$SMOKE_OUT"
	}
	# has_apps NAME...: the applied config holds each application.
	has_apps() {
		local c a
		c=$(curl -fsS --max-time 5 -H "Authorization: Bearer $admin_key" "$admin/api/serve/config" 2>/dev/null) || return 1
		for a in "$@"; do grep -q "\"name\": *\"$a\"" <<<"$c" || return 1; done
	}
	wait_for "POST /greet -> 200 from the quickstart worker" greet
	has_apps text greet || die "the applied config lacks text or greet: $(curl -sS -H "Authorization: Bearer $admin_key" "$admin/api/serve/config")"
	log "re-running the deployers: up -d --scale worker=2"
	compose up -d --no-build --scale worker=2 >/dev/null 2>&1
	# The example's deployer runs again with --if-absent: it must keep the
	# example as it is and change nothing.
	redeployed() { compose logs --no-color deployer 2>/dev/null | grep -q "kept: text exists"; }
	wait_for "the example deployer re-ran and applied nothing" redeployed
	wait_for "POST $SMOKE_PATH -> 200 after the re-run" route
	wait_for "POST /greet -> 200 after the re-run" greet
	has_apps text greet || die "re-running the deployers dropped an application: $(curl -sS -H "Authorization: Bearer $admin_key" "$admin/api/serve/config")"
	log "ok: both applications kept"
fi

ok=1
log "PASS"
