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
# The NATS accounts, credentials and HTTP keys auth-init generates.
export SERVE_SECRETS=${SERVE_SECRETS:-$(mktemp -d /tmp/jetserve-smoke-secrets.XXXXXX)}

log() { printf '[smoke %3ds] %s\n' "$SECONDS" "$*"; }
die() { log "FAIL: $*" >&2; exit 1; }

command -v curl >/dev/null || die "curl is required"
config=${SERVE_CONFIG:-./examples/config.yaml}
# A missing bind-mount source would make Docker create a directory there.
[[ -f $config ]] || die "serve config $config does not exist (set SERVE_CONFIG)"
export SERVE_CONFIG=$config

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { # VAR DEFAULT
	local var=$1 p=$2
	if [[ -n ${!var:-} ]]; then return; fi
	while ! port_free "$p"; do p=$((p + 1)); done
	export "$var=$p"
}
# Picked one after another: a port taken by an earlier pick is not yet
# listening, so keep the ranges apart.
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
compose() { "$root/scripts/compose.sh" "$@"; }

ok=
route_out=$(mktemp)
cleanup() {
	local rc=$?
	set +e
	rm -f "$route_out"
	[[ $SERVE_SECRETS == /tmp/jetserve-smoke-secrets.* && -z ${SMOKE_KEEP:-} ]] && rm -rf "$SERVE_SECRETS"
	if [[ -z $ok ]]; then
		log "---- containers ----" >&2
		compose ps -a >&2 2>/dev/null || compose ps >&2
		log "---- logs ----" >&2
		compose logs --no-color --tail=200 >&2
		log "---- admin status ----" >&2
		curl -sS --max-time 5 -H "Authorization: Bearer ${admin_key:-}" "$admin/api/serve/applications" >&2
		echo >&2
	fi
	if [[ -n ${SMOKE_KEEP:-} ]]; then
		log "kept: COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME scripts/compose.sh down -v"
	else
		log "down -v"
		compose down -v --remove-orphans >/dev/null 2>&1 || compose down -v --remove-orphans
	fi
	if [[ -z $ok && $rc -eq 0 ]]; then rc=1; fi
	exit "$rc"
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
# wait_for WHAT CMD...: run CMD every 0.5 s until it succeeds or the deadline.
wait_for() {
	local what=$1
	shift
	log "waiting for $what"
	until "$@"; do
		((SECONDS < deadline)) || die "timed out after ${SMOKE_TIMEOUT}s waiting for $what"
		sleep 0.5
	done
	log "ok: $what"
}

healthz() { curl -fsS --max-time 2 -o /dev/null "$http/-/healthz" 2>/dev/null; }

keys_written() { [[ -s $SERVE_SECRETS/http/api.key && -s $SERVE_SECRETS/http/admin.key ]]; }
api_key= admin_key=

route() {
	local code
	code=$(curl -sS --max-time 10 -o "$route_out" -w '%{http_code}' \
		-H 'Content-Type: application/json' -H "Authorization: Bearer $api_key" -X POST --data-binary "$SMOKE_BODY" \
		"$http$SMOKE_PATH" 2>/dev/null) || return 1
	[[ $code == 200 ]]
}

# apps_running: at least one application and every one RUNNING.
apps_running() {
	local s
	s=$(curl -fsS --max-time 5 -H "Authorization: Bearer $admin_key" "$admin/api/serve/applications" 2>/dev/null) || return 1
	if command -v jq >/dev/null; then
		jq -e '(.applications // {}) | length > 0 and all(.[]; .status == "RUNNING")' <<<"$s" >/dev/null
	else
		# Applications carry "status"; deployments use other state names
		# (HEALTHY, UPDATING...) and replicas use "state".
		grep -Eq '"status" *: *"RUNNING"' <<<"$s" &&
			! grep -Eq '"status" *: *"(NOT_STARTED|DEPLOYING|DEPLOY_FAILED|DELETING)"' <<<"$s"
	fi
}

wait_for "auth-init wrote the keys to $SERVE_SECRETS" keys_written
api_key=$(<"$SERVE_SECRETS/http/api.key")
admin_key=$(<"$SERVE_SECRETS/http/admin.key")
wait_for "ingress $http/-/healthz" healthz
wait_for "POST $SMOKE_PATH -> 200" route
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST --data-binary "$SMOKE_BODY" "$http$SMOKE_PATH")
[[ $code == 401 ]] || die "POST $SMOKE_PATH without the API key answered $code, want 401"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X DELETE "$admin/api/serve/applications")
[[ $code == 401 ]] || die "DELETE on the admin API without its key answered $code, want 401"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $api_key" -X DELETE "$admin/api/serve/applications")
[[ $code == 401 ]] || die "DELETE on the admin API with the ingress's key answered $code, want 401"
log "ok: auth on (no key: 401; the ingress key on the admin API: 401)"
log "response: $(head -c 500 "$route_out")"
wait_for "every application RUNNING ($admin/api/serve/applications)" apps_running

if [[ $quickstart == 1 ]]; then
	greet() {
		local code
		code=$(curl -sS --max-time 10 -o "$route_out" -w '%{http_code}' -H "Authorization: Bearer $api_key" -X POST --data-binary '{"name":"compose"}' \
			"$http/greet" 2>/dev/null) || return 1
		[[ $code == 200 ]] && grep -q 'Hello, compose!' "$route_out"
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
