#!/usr/bin/env bash
# Build the knemu base image locally from Debian packages, for machines that reach no container
# registry (docker cannot pull python:3.11-slim there).  The result has what the Dockerfile would
# otherwise install on top of python:3.11-slim-bookworm: Python 3.11 with venv, iproute2,
# util-linux (unshare, nsenter, flock), iptables (nodes masquerade pods' traffic to the api-server),
# ping, curl, dig, iperf3, tcpdump, socat, BIRD 2 (--backend bgp), and the container runtime (runc,
# skopeo, umoci).
#
#   compose/build-base-image.sh [TAG]     needs root + mmdebstrap; prints the image's tag last.
# The default tag names the package list (knemu-base:bookworm-<hash>), so a machine holding a base
# built from an older list builds the new one instead of reusing it.
set -euo pipefail
packages=python3,python3-venv,iproute2,iptables,iputils-ping,curl,dnsutils,iperf3,procps,tcpdump,socat,bird2,ca-certificates,netbase,runc,skopeo,umoci
tag=${1:-knemu-base:bookworm-$(printf '%s' "$packages" | sha256sum | cut -c1-8)}
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already present" >&2
  echo "$tag"
  exit 0
fi
command -v mmdebstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq mmdebstrap; } >&2
mirror=${KNEMU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
echo "building $tag from Debian bookworm ($mirror) with: $packages" >&2
mmdebstrap --variant=minbase --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm - "$mirror" \
  | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      - "$tag" >&2
echo "built $tag" >&2
echo "$tag"
