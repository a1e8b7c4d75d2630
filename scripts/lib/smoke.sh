# shellcheck shell=bash
# What the compose smoke tests (scripts/compose-smoke.sh,
# scripts/compose-ha-smoke.sh) share. Source it after `set -euo pipefail`
# and after setting SMOKE_NAME (the log prefix) and root (the repository):
#
#   log MSG... / die MSG...            progress, and failure (exit 1)
#   pick_port VAR DEFAULT              export VAR = the first free port from DEFAULT not picked before
#   compose ARGS...                    scripts/compose.sh (COMPOSE_BASE, COMPOSE_OVERRIDES, COMPOSE_PROJECT_NAME)
#   smoke_secrets                      export SERVE_SECRETS (a throw-away directory unless set)
#   smoke_remove_secrets               remove it if throw-away and SMOKE_KEEP is not set
#   smoke_finish RC TAIL [ON_FAILURE]  the end of the EXIT trap: on failure the containers and logs; down -v or keep; exit
#   wait_for WHAT CMD...               run CMD every 0.5 s until it succeeds or $deadline (SECONDS)
#   load_keys                          wait for auth-init's HTTP keys; set api_key and admin_key
#   http_code [CURL ARGS...]           the HTTP status of one request (000 if none)
#   post_json BASE PATH BODY           POST JSON with the API key; 200? (the answer in $SMOKE_OUT if set)
#   apps_running ADMIN                 the admin API shows at least one application, all RUNNING
#   check_auth_refused INGRESS ADMIN PATH BODY   401 without a key, and for the ingress's key on the admin API

log() { printf '[%s %3ds] %s\n' "${SMOKE_NAME:-smoke}" "$SECONDS" "$*"; }
die() {
	log "FAIL: $*" >&2
	exit 1
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports picked one after another are not yet listening: remember them.
_smoke_taken=" "
pick_port() { # VAR DEFAULT
	local var=$1 p=$2
	if [[ -n ${!var:-} ]]; then
		_smoke_taken+="${!var} "
		return
	fi
	while ! port_free "$p" || [[ $_smoke_taken == *" $p "* ]]; do p=$((p + 1)); done
	_smoke_taken+="$p "
	export "$var=$p"
}

compose() { "$root/scripts/compose.sh" "$@"; }

# The NATS accounts, credentials and HTTP keys auth-init generates, in a
# directory of their own unless SERVE_SECRETS names one.
smoke_secrets() {
	export SERVE_SECRETS=${SERVE_SECRETS:-$(mktemp -d /tmp/jetserve-smoke-secrets.XXXXXX)}
}
smoke_remove_secrets() {
	if [[ $SERVE_SECRETS == /tmp/jetserve-smoke-secrets.* && -z ${SMOKE_KEEP:-} ]]; then
		rm -rf "$SERVE_SECRETS"
	fi
}

# smoke_finish RC TAIL [ON_FAILURE]: the end of a smoke test's EXIT trap
# (after set +e). Unless $ok is set, print the containers, their last TAIL
# log lines and whatever the command ON_FAILURE prints. Then leave the
# project running (SMOKE_KEEP, saying how to stop it) or take it down with
# its volumes, remove throw-away secrets, and exit RC (1 where the test
# did not reach ok with RC 0).
smoke_finish() {
	local rc=$1 tail=$2 on_failure=${3:-}
	if [[ -z $ok ]]; then
		log "---- containers ----" >&2
		compose ps -a >&2 2>/dev/null || compose ps >&2
		log "---- logs ----" >&2
		compose logs --no-color --tail="$tail" >&2
		if [[ -n $on_failure ]]; then "$on_failure" >&2; fi
	fi
	if [[ -n ${SMOKE_KEEP:-} ]]; then
		log "kept: COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME${COMPOSE_BASE:+ COMPOSE_BASE=$COMPOSE_BASE} SERVE_SECRETS=$SERVE_SECRETS scripts/compose.sh down -v"
	else
		log "down -v"
		compose down -v --remove-orphans >/dev/null 2>&1 || compose down -v --remove-orphans
	fi
	smoke_remove_secrets
	if [[ -z $ok && $rc -eq 0 ]]; then rc=1; fi
	exit "$rc"
}

wait_for() { # WHAT CMD...
	local what=$1
	shift
	log "waiting for $what"
	until "$@"; do
		((SECONDS < deadline)) || die "timed out after ${SMOKE_TIMEOUT}s waiting for $what"
		sleep 0.5
	done
	log "ok: $what"
}

api_key= admin_key=
_keys_written() { [[ -s $SERVE_SECRETS/http/api.key && -s $SERVE_SECRETS/http/admin.key ]]; }
load_keys() {
	wait_for "auth-init wrote the keys to $SERVE_SECRETS" _keys_written
	api_key=$(<"$SERVE_SECRETS/http/api.key")
	admin_key=$(<"$SERVE_SECRETS/http/admin.key")
}

http_code() { # CURL ARGS...
	curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$@" 2>/dev/null || true
}

# post_json BASE PATH BODY: POST BODY with the API key; the answer is in
# $SMOKE_OUT when set.
post_json() {
	local code
	code=$(curl -sS --max-time 10 -o "${SMOKE_OUT:-/dev/null}" -w '%{http_code}' \
		-H 'Content-Type: application/json' -H "Authorization: Bearer $api_key" \
		-X POST --data-binary "$3" "$1$2" 2>/dev/null) || return 1
	[[ $code == 200 ]]
}

apps_running() { # ADMIN
	local s
	s=$(curl -fsS --max-time 5 -H "Authorization: Bearer $admin_key" "$1/api/serve/applications" 2>/dev/null) || return 1
	if command -v jq >/dev/null; then
		jq -e '(.applications // {}) | length > 0 and all(.[]; .status == "RUNNING")' <<<"$s" >/dev/null
	else
		# Applications carry "status"; deployments use other state names
		# (HEALTHY, UPDATING...) and replicas use "state".
		grep -Eq '"status" *: *"RUNNING"' <<<"$s" &&
			! grep -Eq '"status" *: *"(NOT_STARTED|DEPLOYING|DEPLOY_FAILED|DELETING)"' <<<"$s"
	fi
}

# check_auth_refused INGRESS ADMIN PATH BODY: a request without a key is
# 401 on both, and the ingress's key does not open the admin API.
check_auth_refused() {
	local ingress=$1 admin=$2 path=$3 body=$4 code
	code=$(http_code -X POST --data-binary "$body" "$ingress$path")
	[[ $code == 401 ]] || die "POST $ingress$path without the API key answered $code, want 401"
	code=$(http_code -X DELETE "$admin/api/serve/applications")
	[[ $code == 401 ]] || die "DELETE on the admin API $admin without its key answered $code, want 401"
	code=$(http_code -H "Authorization: Bearer $api_key" -X DELETE "$admin/api/serve/applications")
	[[ $code == 401 ]] || die "DELETE on the admin API $admin with the ingress's key answered $code, want 401"
	log "ok: auth on at $ingress and $admin (no key: 401; the ingress key on the admin API: 401)"
}
