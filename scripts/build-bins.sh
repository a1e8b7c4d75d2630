#!/usr/bin/env bash
# Build every jetserve program, and the nats-server the NATS image ships, as
# static linux binaries (the container images are FROM scratch).
#
#   scripts/build-bins.sh [outdir]          # default outdir: <repo>/bin
#
# Environment:
#   BINS="jetserve-router nats-server"  build only these (default: all)
#   GOOS / GOARCH                        target (default linux / amd64)
#   GOWORK                               services and the CLI build inside the
#                                        go.work workspace unless GOWORK=off;
#                                        nats-server always builds with
#                                        GOWORK=off from deploy/natsbuild.
#
# Each module is built from its own directory, one `go build` per binary,
# so one broken program does not hide the others; the exit status is
# non-zero when any of them failed, and a failed binary is removed from
# outdir (so no image is ever built from a stale one).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)

export CGO_ENABLED=0
export GOOS=${GOOS:-linux}
export GOARCH=${GOARCH:-amd64}
flags=(-trimpath -ldflags='-s -w')

# name  module-dir  package  [GOWORK override]
targets=(
	"nats-server         deploy/natsbuild     github.com/nats-io/nats-server/v2 off"
	"jetserve-ingress    services/ingress     ./cmd/jetserve-ingress"
	"jetserve-router     services/router      ./cmd/jetserve-router"
	"jetserve-worker     examples             ./cmd/jetserve-worker"
	"jetserve-scheduler  services/scheduler   ./cmd/jetserve-scheduler"
	"jetserve-autoscaler services/autoscaler  ./cmd/jetserve-autoscaler"
	"jetserve            cmd/jetserve         ."
	"jetserve-auth       deploy/auth          ./cmd/jetserve-auth"
)

wanted() {
	[[ -z ${BINS:-} ]] && return 0
	local b
	for b in $BINS; do [[ $b == "$1" ]] && return 0; done
	return 1
}

names=" "
for t in "${targets[@]}"; do names+="${t%% *} "; done
for b in ${BINS:-}; do
	[[ $names == *" $b "* ]] || { echo "build-bins: unknown binary $b (known:$names)" >&2; exit 2; }
done

failed=()
for t in "${targets[@]}"; do
	read -r name dir pkg gowork <<<"$t"
	wanted "$name" || continue
	start=$SECONDS
	if (
		cd "$root/$dir"
		if [[ -n ${gowork:-} ]]; then export GOWORK=$gowork; fi
		go build "${flags[@]}" -o "$out/$name" "$pkg"
	); then
		printf 'built %-20s %s/%s  %3ds  %s\n' "$name" "$GOOS" "$GOARCH" $((SECONDS - start)) "$out/$name"
	else
		printf 'FAILED %s (in %s)\n' "$name" "$dir" >&2
		rm -f "$out/$name" # never leave a stale binary behind for the images
		failed+=("$name")
	fi
done

if ((${#failed[@]})); then
	echo "build-bins: failed: ${failed[*]}" >&2
	exit 1
fi
