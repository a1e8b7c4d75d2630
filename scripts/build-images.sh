#!/usr/bin/env bash
# Build the jetserve container images (all FROM scratch, nothing pulled):
#
#   scripts/build-images.sh
#
# runs scripts/build-bins.sh, then one `docker build` per image with the
# repository root as context (.dockerignore lets only bin/ and deploy/ in).
#
#   image                    binary                Dockerfile
#   jetserve/nats:dev        nats-server           deploy/nats.Dockerfile
#   jetserve/ingress:dev     jetserve-ingress      deploy/Dockerfile
#   jetserve/router:dev      jetserve-router       deploy/Dockerfile
#   jetserve/worker:dev      jetserve-worker       deploy/Dockerfile
#   jetserve/scheduler:dev   jetserve-scheduler    deploy/Dockerfile
#   jetserve/autoscaler:dev  jetserve-autoscaler   deploy/Dockerfile
#   jetserve/cli:dev         jetserve              deploy/Dockerfile
#   jetserve/auth:dev        jetserve-auth         deploy/Dockerfile
#
# Environment:
#   IMAGES="nats router"  build only these images (and only their binaries)
#   SKIP_BINS=1           use the binaries already in bin/
#   DOCKER=...            docker CLI to use (default: docker)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
docker=${DOCKER:-docker}

# image  binary
images=(
	"nats        nats-server"
	"ingress     jetserve-ingress"
	"router      jetserve-router"
	"worker      jetserve-worker"
	"scheduler   jetserve-scheduler"
	"autoscaler  jetserve-autoscaler"
	"cli         jetserve"
	"auth        jetserve-auth"
)

selected=()
for i in "${images[@]}"; do
	read -r img bin <<<"$i"
	if [[ -n ${IMAGES:-} && " $IMAGES " != *" $img "* ]]; then continue; fi
	selected+=("$img $bin")
done
for want in ${IMAGES:-}; do
	found=
	for i in "${selected[@]}"; do [[ ${i%% *} == "$want" ]] && found=1; done
	[[ -n $found ]] || { echo "build-images: unknown image $want" >&2; exit 2; }
done

if [[ -z ${SKIP_BINS:-} ]]; then
	bins=()
	for i in "${selected[@]}"; do bins+=("${i##* }"); done
	# A binary that failed to build is removed by build-bins.sh; build the
	# images of the others, and fail at the end.
	BINS="${bins[*]}" "$root/scripts/build-bins.sh" "$root/bin" || bins_failed=1
fi

failed=()
for i in "${selected[@]}"; do
	read -r img bin <<<"$i"
	tag="jetserve/$img:dev"
	if [[ ! -x $root/bin/$bin ]]; then
		echo "build-images: $root/bin/$bin missing (run scripts/build-bins.sh)" >&2
		failed+=("$img")
		continue
	fi
	if [[ $img == nats ]]; then
		args=(-f "$root/deploy/nats.Dockerfile")
	else
		args=(-f "$root/deploy/Dockerfile" --build-arg "BIN=$bin")
	fi
	if id=$("$docker" build -q "${args[@]}" -t "$tag" "$root"); then
		printf 'image %-26s %s\n' "$tag" "${id#sha256:}"
	else
		echo "build-images: docker build of $tag failed" >&2
		failed+=("$img")
	fi
done

if ((${#failed[@]})) || [[ -n ${bins_failed:-} ]]; then
	echo "build-images: failed: ${failed[*]:-}${bins_failed:+ (and build-bins.sh)}" >&2
	exit 1
fi
