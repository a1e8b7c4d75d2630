#!/usr/bin/env bash
# Smoke test of the HA profile (docker-compose.ha.yml): a 3-node NATS
# cluster, every service twice, three workers, auth on (deploy/auth's NATS
# users and route credential, the generated HTTP keys, in a throw-away
# SERVE_SECRETS directory). Under a throw-away project name it
#   1. starts the profile and waits until both ingresses answer the example
#      route with the API key and every application is RUNNING on both
#      admin APIs (with the admin key); a request without a key is 401 on
#      both ingresses and both admin APIs, the ingress key on an admin API too;
#   2. checks every stream and bucket is R3 (as the operator's user) and that
#      `nats server report jetstream` works as the system account's user;
#   3. sends requests to both ingresses continuously, docker-kills the NATS
#      node leading the apps bucket, and checks requests go on (at most
#      SMOKE_MAX_GAP seconds without a success on either ingress), the admin
#      API and the server report work with the node gone;
#   4. starts the node again and waits until it is healthy (caught up);
# and always tears the project down (`down -v`). On failure it prints the
# containers and their logs.
#
#   scripts/compose-ha-smoke.sh        (make compose-ha-test)
#
# Environment:
#   SMOKE_TIMEOUT  seconds for all waiting     (default 180)
#   SMOKE_MAX_GAP  seconds without a success   (default 12: the cluster's
#                  leader election, 4-9 s, plus 2 s, plus curl's pace)
#   SMOKE_KEEP=1   leave the project running
#   SKIP_BUILD=1   use the jetserve/*:dev images already built
#   SERVE_SECRETS  the secrets directory (default: a new one, removed after)
# Host ports: the first free from 8000/8001 (ingresses), 8265/8266 (admin),
# 4222-4224 and 8222-8224 (NATS); SERVE_*_PORT force them.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-180}
SMOKE_MAX_GAP=${SMOKE_MAX_GAP:-12}
export COMPOSE_PROJECT_NAME=jetserve-ha-smoke-$$-$RANDOM
export COMPOSE_BASE=docker-compose.ha.yml
unset COMPOSE_OVERRIDES
SMOKE_NAME=ha-smoke
# shellcheck source=lib/smoke.sh
source "$root/scripts/lib/smoke.sh"
smoke_secrets

command -v curl >/dev/null || die "curl is required"
command -v jq >/dev/null || die "jq is required"

pick_port SERVE_HTTP_PORT 8000
pick_port SERVE_HTTP2_PORT 8001
pick_port SERVE_ADMIN_PORT 8265
pick_port SERVE_ADMIN2_PORT 8266
pick_port SERVE_NATS_PORT 4222
pick_port SERVE_NATS2_PORT 4223
pick_port SERVE_NATS3_PORT 4224
pick_port SERVE_NATS_MONITOR_PORT 8222
pick_port SERVE_NATS2_MONITOR_PORT 8223
pick_port SERVE_NATS3_MONITOR_PORT 8224
ingresses=("http://127.0.0.1:$SERVE_HTTP_PORT" "http://127.0.0.1:$SERVE_HTTP2_PORT")
admins=("http://127.0.0.1:$SERVE_ADMIN_PORT" "http://127.0.0.1:$SERVE_ADMIN2_PORT")
declare -A client=([nats1]=$SERVE_NATS_PORT [nats2]=$SERVE_NATS2_PORT [nats3]=$SERVE_NATS3_PORT)
declare -A monitor=([nats1]=$SERVE_NATS_MONITOR_PORT [nats2]=$SERVE_NATS2_MONITOR_PORT [nats3]=$SERVE_NATS3_MONITOR_PORT)

work=$(mktemp -d)
ok=
traffic_pids=()
cleanup() {
	local rc=$?
	set +e
	for p in "${traffic_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$work"
	smoke_finish "$rc" 100
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z ${SKIP_BUILD:-} ]]; then
	log "building binaries and images"
	scripts/build-images.sh
fi
log "building the nats CLI (go tool nats)"
go tool nats --version >/dev/null

log "up: project $COMPOSE_PROJECT_NAME, ingresses :$SERVE_HTTP_PORT :$SERVE_HTTP2_PORT, admin :$SERVE_ADMIN_PORT :$SERVE_ADMIN2_PORT, nats :$SERVE_NATS_PORT-$SERVE_NATS3_PORT"
compose up -d --no-build

deadline=$((SECONDS + SMOKE_TIMEOUT))
body='{"text":"A highly available fleet is a wonderful thing."}'
# nats NODE ARGS...: the nats CLI against one node as the operator's user
# (every subject of the JETSERVE account: streams, buckets).
nats() {
	local node=$1
	shift
	go tool nats --server "nats://127.0.0.1:${client[$node]}" --creds "$SERVE_SECRETS/creds/operator.creds" --timeout 3s "$@"
}
both_ingresses() { post_json "${ingresses[0]}" /text/analyze "$body" && post_json "${ingresses[1]}" /text/analyze "$body"; }
node_healthy() { curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:${monitor[$1]}/healthz" 2>/dev/null; }
all_nodes_healthy() { node_healthy nats1 && node_healthy nats2 && node_healthy nats3; }
report() { # NODE: nats server report jetstream as the system account's user
	go tool nats --server "nats://127.0.0.1:${client[$1]}" --creds "$SERVE_SECRETS/creds/sys.creds" --timeout 5s server report jetstream >"$work/report" 2>&1
}

load_keys
wait_for "nats1..3 healthy" all_nodes_healthy
wait_for "both ingresses answer POST /text/analyze with the API key" both_ingresses
wait_for "every application RUNNING (${admins[0]})" apps_running "${admins[0]}"
apps_running "${admins[1]}" || die "the second scheduler's admin API does not show every application RUNNING"
check_auth_refused "${ingresses[0]}" "${admins[0]}" /text/analyze "$body"
check_auth_refused "${ingresses[1]}" "${admins[1]}" /text/analyze "$body"

# Every stream (buckets and object stores are streams) has 3 replicas.
streams=$(nats nats1 stream ls --names) || die "nats stream ls failed"
[[ -n $streams ]] || die "no stream"
for s in $streams; do
	r=$(nats nats1 stream info "$s" --json | jq -r '.config.num_replicas')
	[[ $r == 3 ]] || die "stream $s has $r replicas, want 3"
done
log "ok: every stream R3: $(echo $streams | tr '\n' ' ')"
report nats1 || die "nats server report jetstream (the sys user) failed: $(cat "$work/report")"
for n in nats1 nats2 nats3; do grep -q "$n" "$work/report" || die "server report lacks $n: $(cat "$work/report")"; done
log "ok: nats server report jetstream as the sys user lists nats1..3"
# A client without credentials: the server's answer to CONNECT and PING.
for n in nats1 nats2 nats3; do
	answer=$(
		exec 3<>"/dev/tcp/127.0.0.1/${client[$n]}"
		printf 'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n' >&3
		timeout 5 cat <&3 || true
	)
	if [[ $answer != *"Authorization Violation"* || $answer == *PONG* ]]; then
		die "$n answered a client without credentials: $answer"
	fi
done
log "ok: nats1..3 refuse a client without credentials (Authorization Violation)"

leader=$(nats nats1 stream info KV_jetserve_apps --json | jq -r '.cluster.leader')
[[ $leader == nats[123] ]] || die "no leader of KV_jetserve_apps: $leader"
other=nats1
[[ $leader == nats1 ]] && other=nats2

# Traffic: one loop per ingress, each line "<epoch ms> <http code>". Each
# POST carries an Idempotency-Key, as a careful client's does, so the fleet
# may retry it on another replica if the one serving it is cut off.
for i in 0 1; do
	(
		n=0
		while :; do
			n=$((n + 1))
			code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
				-H "Authorization: Bearer $api_key" -H "Idempotency-Key: smoke-$i-$n" \
				-X POST --data-binary '{"text":"Still serving?"}' "${ingresses[$i]}/text/analyze" 2>/dev/null) || code=000
			echo "$(date +%s%3N) $code"
		done
	) >"$work/traffic$i" &
	traffic_pids+=($!)
done
sleep 3
log "docker kill of $leader, which leads KV_jetserve_apps, under traffic"
killed_ms=$(date +%s%3N)
compose kill "$leader" >/dev/null 2>&1
new_leader() {
	local l
	l=$(nats "$other" stream info KV_jetserve_apps --json 2>/dev/null | jq -r .cluster.leader) || return 1
	[[ -n $l && $l != null && $l != "$leader" ]]
}
wait_for "KV_jetserve_apps led by another node" new_leader
elected_ms=$(date +%s%3N)
sleep 8 # traffic after the election
apps_running "${admins[0]}" || apps_running "${admins[1]}" || die "no admin API answers with every application RUNNING after the node loss"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/json' -H "Authorization: Bearer $admin_key" \
	--data-binary '{"applications":[{"name":"hasmoke","route_prefix":"/hasmoke","ingress":"Echo","deployments":[{"name":"Echo","handler":"diag.Echo"}]}]}' \
	"${admins[0]}/api/serve/applications/hasmoke")
[[ $code == 200 ]] || die "PUT an application after the node loss: HTTP $code"
report "$other" || die "server report jetstream with $leader down failed: $(cat "$work/report")"
log "ok: admin API (GET, PUT) and server report work with $leader down"
for p in "${traffic_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
traffic_pids=()

summary() { # FILE: "<requests> <failures> <longest ms without a 200 after the kill> <failed codes>"
	awk -v k="$killed_ms" '{ n++; if ($2 != 200) { f++; codes[$2]++ } else if ($1 >= k) { if (last == "") last = k; if ($1 - last > gap) gap = $1 - last; last = $1 } }
		END { c = ""; for (x in codes) c = c x "x" codes[x] " "; printf "%d %d %d %s\n", n, f, gap, (c == "" ? "-" : c) }' "$1"
}
for i in 0 1; do
	read -r n f gap codes < <(summary "$work/traffic$i")
	log "ingress $((i + 1)): $n requests, $f failed (HTTP code x count: $codes), longest without a success after the kill ${gap} ms (election took $((elected_ms - killed_ms)) ms or less)"
	((n > 0)) || die "no traffic through ingress $((i + 1))"
	((gap <= SMOKE_MAX_GAP * 1000)) || die "ingress $((i + 1)) served nothing for ${gap} ms (> ${SMOKE_MAX_GAP} s)"
done

log "starting $leader again"
compose start "$leader" >/dev/null 2>&1
wait_for "$leader healthy again (current with its streams)" node_healthy "$leader"
wait_for "both ingresses answer" both_ingresses

ok=1
log "PASS"
