#!/usr/bin/env bash
# A Debian bookworm + Python 3.11 base image for deploy/Dockerfile, made without a container
# engine: debootstrap a minbase root, install Python with apt, `podman import` it.
#   deploy/image/base.sh [IMAGE]        (default localhost/ibkr-bridge-base:bookworm-py311)
# Prints the image name. Reuses the image when the local store has it, and the root tarball
# cached in $IBKR_BRIDGE_IMAGE_CACHE (default ~/.cache/ibkr-bridge) when only that survived.
# Needs root, debootstrap, podman and Debian's mirror ($DEBIAN_MIRROR).
set -euo pipefail
image=${1:-localhost/ibkr-bridge-base:bookworm-py311}
cache=${IBKR_BRIDGE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ibkr-bridge}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball=$cache/bookworm-py311.tar
# What the official python image offers the Dockerfile: python3 (+ venv), CA certificates.
packages=(python3.11 python3.11-venv ca-certificates)

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi
if [[ ! -s $tarball ]]; then
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/root.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase bookworm "$root" "$mirror" >&2
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >&2
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  : >"$root/etc/resolv.conf"
  tar --numeric-owner -C "$root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi
podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$tarball" "$image" >&2
echo "$image"
