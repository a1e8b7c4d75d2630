#!/usr/bin/env bash
# make bench: (0) the stage budget — microbenchmarks of each stage of a
# no-op request with allocation counts (docs/performance.md) — and the
# concurrency sweep (1..512, fleet vs raw side by side under wrk, with the
# targets and the no-collapse check, CPU per request by process and CPU
# profiles of the ingress and worker); (1) the fleet (ingress → replica, each its own process) side
# by side in one run with a raw net/http handler and raw HTTP → NATS
# request-reply → responder, and a process-runtime replica (a no-op Go child
# process) beside the Go replica, at concurrency 1 and 64; (2) the job path vs a
# raw JetStream loop, and durable workflows vs their raw JetStream writes; (3) autoscaling reaction and cold start; (4) a model
# whose cost is per call, batched (serve.Batcher) vs unbatched; (5)
# composition: chains of 1, 5 and 10 no-op deployments across two workers
# and on one, through the router service, with default placement, and 4-way
# fan-outs, with the raw baselines in the same run — among them raw NATS
# chains of 1 and 5 hops across processes (per-hop p50 at c=1, chain5/chain1
# at c=32, CPU per hop by process, each beside the raw chain's; CPU profiles
# of the workers under the cross-worker chain;
# JETSERVE_COMPOSE_PATHS=h1,x5 measures only the paths named). Prints
# p50/p99, rates and the ratios. wrk (Debian) is the c=64 load generator when it
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
# JETSERVE_BENCH_ONLY="stages sweep" runs only the sections named (stages,
# sweep, scaleout, large, sync, jobs, workflows, autoscale, batching,
# composition);
# unset runs them all.
only() {
	[ -z "${JETSERVE_BENCH_ONLY:-}" ] && return 0
	case " ${JETSERVE_BENCH_ONLY//,/ } " in *" $1 "*) return 0 ;; esac
	return 1
}
PROFILES="${JETSERVE_BENCH_PROFILES:-${TMPDIR:-/tmp}/jetserve-bench-profiles}"
if only stages; then
	echo "== stage budget: each stage of a no-op request alone, ns/op and allocs/op (docs/performance.md)"
	(cd services/ingress && go test -run '^$' -bench 'Stage' -benchmem -count=1 ./internal/gateway/)
	(cd pkg && go test -run '^$' -bench 'Stage' -benchmem -count=1 ./wire/ ./routing/)
	(cd services/worker && go test -run '^$' -bench 'Stage' -benchmem -count=1 ./internal/replica/)
	echo
fi
if only sweep; then
	echo "== concurrency sweep 1..512: fleet vs raw side by side (wrk), the targets, no collapse past saturation, CPU per request by process"
	echo "   CPU profiles of the ingress and the worker under load: $PROFILES"
	(cd e2e && JETSERVE_BENCH_PROFILES="$PROFILES" go test -run '^$' -bench 'Sweep' -benchtime 1x -count=1 -timeout 20m ./)
	echo
fi
if only scaleout; then
	echo "== scale-out: two ingress and two worker processes vs one of each, on this machine"
	(cd e2e && go test -run '^$' -bench 'ScaleOut' -benchtime 1x -count=1 -timeout 20m ./)
	echo
fi
if only large; then
	echo "== large payloads: a 10 MB request and a 10 MB response through the fleet (stock nats-server), chunked and object-store transports, vs raw net/http"
	(cd e2e && go test -run '^$' -bench 'LargeBody' -benchtime 1x -count=1 -timeout 20m ./)
	echo
fi
if only sync; then
	echo "== sync requests: fleet vs raw HTTP vs raw HTTP→NATS; process-runtime replica vs Go replica"
	(cd e2e && go test -run '^$' -bench 'FleetVsRaw' -benchtime "${BENCHTIME:-3000x}" -count=1 -timeout 20m ./)
	echo
fi
if only jobs; then
	echo "== async jobs: Submit → runner → SUCCEEDED vs a raw JetStream publish → pull → ack → KV put loop"
	(cd pkg && go test -run '^$' -bench 'BenchmarkJobs' -benchtime "${JOBS_BENCHTIME:-2000x}" -count=1 -timeout 20m ./jobs/)
	echo
fi
if only workflows; then
	echo "== durable workflows: a no-step, a 3-step and a 100-parallel-step workflow, a run resumed after a job, end to end, beside the raw JetStream writes of a 3-step run"
	(cd pkg && go test -run '^$' -bench 'BenchmarkWorkflows' -benchtime "${WF_BENCHTIME:-500x}" -count=1 -timeout 20m ./jobs/)
	echo
fi
if only autoscale; then
	echo "== autoscaling: load step → first added replica serving; cold start from zero → first answer"
	(cd e2e && go test -run '^$' -bench 'Autoscale' -benchtime 3x -count=1 -timeout 20m ./)
	echo
fi
if only batching; then
	echo "== dynamic batching: a 2 ms-per-call model batched vs unbatched at c=32, through the fleet"
	(cd e2e && go test -run '^$' -bench 'Batching' -benchtime "${BATCH_BENCHTIME:-2000x}" -count=1 -timeout 20m ./)
	echo
fi
if only composition; then
	echo "== composition: handle hops across workers, within one worker, via the router service, default placement; 4-way fan-out; beside a raw NATS chain across processes"
	echo "   CPU profiles of the two workers and the ingress under the cross-worker chain: $PROFILES/compose-*"
	(cd e2e && JETSERVE_BENCH_PROFILES="$PROFILES" go test -run '^$' -bench 'Composition' -benchtime "${COMPOSE_BENCHTIME:-2000x}" -count=1 -timeout 30m ./)
	echo
fi
