#!/usr/bin/env bash
# Builds the container image of dist/Dockerfile with buildah (no daemon needed) and checks that
# the image runs: "peergate version" inside it, as its non-root user. Usage: dist/image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/peergate:latest}
ctx=$(mktemp -d)
ctr=
trap 'rm -rf "$ctx"; [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null' EXIT
CGO_ENABLED=0 go build -trimpath -buildvcs=true -o "$ctx/peergate" ./cmd/peergate
cp dist/Dockerfile "$ctx/"
buildah bud -q --isolation chroot -f "$ctx/Dockerfile" -t "$tag" "$ctx" >/dev/null
ctr=$(buildah from -q "$tag")
[ "$(buildah inspect -f '{{.OCIv1.Config.User}}' "$ctr")" = "65532:65532" ] || { echo "image does not run as 65532" >&2; exit 1; }
out=$(buildah run --isolation chroot "$ctr" -- /usr/bin/peergate version)
case "$out" in "peergate "*) echo "image $tag: $out" ;; *) echo "image $tag: peergate version said: $out" >&2; exit 1 ;; esac
