#!/usr/bin/env bash
# Extracts a minimal Debian 12 root file system (debootstrap minbase with systemd, libssl3, adduser and gpg: what
# the Kintsugi packages need at install time) into DEST, for installing the packages in a chroot. The
# debootstrap'd root is cached as a tarball under $KINTSUGI_CACHE (default /var/cache/kintsugi), guarded by
# a lock, so it is made once per machine.
set -euo pipefail
dest="$1"
cache="${KINTSUGI_CACHE:-/var/cache/kintsugi}/debian-roots"
include="systemd,libssl3,adduser,init-system-helpers,gpg"
tarball="$cache/bookworm-minbase-$(echo "$include" | tr , -).tar"
mkdir -p "$cache" "$dest"
(
  flock 9
  if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "debian-root: debootstrap is missing (apt-get install debootstrap)" >&2; exit 5; }
    staging=$(mktemp -d "$cache/staging.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    echo "debian-root: debootstrap bookworm into the cache (once; a few minutes)..." >&2
    debootstrap --variant=minbase --include="$include" bookworm "$staging/root" http://deb.debian.org/debian >"$staging/log" 2>&1 \
      || { tail -20 "$staging/log" >&2; exit 1; }
    rm -rf "$staging/root/var/cache/apt/archives"/*.deb
    tar -C "$staging/root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
  fi
) 9>"$cache/.lock"
tar -C "$dest" -xf "$tarball"
