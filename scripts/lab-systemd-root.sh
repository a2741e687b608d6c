#!/usr/bin/env bash
# Makes (once) and prints the path of a Debian 12 root file system image for lab guests that boot with systemd
# as PID 1: debootstrap (minbase) with systemd, udev, D-Bus and what the Kintsugi packages need at install time,
# plus the lab's own unit that runs each boot's command and powers off; an ext4 image written by mkfs.ext4 -d
# (no loop mount). Cached by content under $KINTSUGI_CACHE/lab/systemd-root (default /var/cache/kintsugi): the
# name carries a hash of this script, so a change here makes a new image. Guarded by a lock; made once per machine.
# The lab boots it as its root disk (LabRunSpec.RootDisk): the initramfs mounts it and hands over to systemd.
# Usage: lab-systemd-root.sh [cloud-init]. The cloud-init variant adds Debian's cloud-init (NoCloud only), for
# guests that boot with a seed in /var/lib/cloud/seed/nocloud (the cloud-init snippet in docs/deploy).
set -euo pipefail
variant="${1:-base}"
case "$variant" in base|cloud-init) ;; *) echo "lab-systemd-root: unknown variant '$variant' (cloud-init)" >&2; exit 2;; esac
cache="${KINTSUGI_CACHE:-/var/cache/kintsugi}/lab/systemd-root"
# gpg and gpg-agent: the server package's apt signing key; curl: a machine fetching that key and publishing a .deb;
# openssh-server, python3, python3-apt and sudo: a machine an Ansible controller manages over SSH (the apt and
# apt_repository modules need python3-apt on the machine; `become` runs sudo). No ansible-core: the controller is the
# host. (debootstrap cannot install ansible-core: it does not resolve virtual packages, so python3-cryptography's
# python3-cffi-backend-api-min/max, which python3-cffi-backend provides, are never fetched and it stays unconfigured.)
include="systemd,systemd-sysv,udev,dbus,kmod,libssl3,adduser,init-system-helpers,procps,ca-certificates,gpg,gpg-agent,curl"
include="$include,openssh-server,python3,python3-apt,sudo"
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
image="$cache/bookworm-$key.img"
[ "$variant" = base ] || image="$cache/bookworm-$variant-$key.img"
mkdir -p "$cache"
(
  flock 9
  [ -f "$image" ] && exit 0
  command -v debootstrap >/dev/null || { echo "lab-systemd-root: debootstrap is missing (apt-get install debootstrap)" >&2; exit 5; }
  staging=$(mktemp -d "$cache/staging.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  echo "lab-systemd-root: debootstrap bookworm with systemd into the cache (once; a few minutes)..." >&2
  debootstrap --variant=minbase --include="$include" bookworm "$staging/root" http://deb.debian.org/debian >"$staging/log" 2>&1 \
    || { tail -20 "$staging/log" >&2; exit 1; }
  root="$staging/root"
  if [ "$variant" = cloud-init ]; then
    # With apt in the root, not debootstrap --include: cloud-init's dependencies name virtual packages.
    mount -t proc proc "$root/proc"
    trap 'umount "$root/proc" 2>/dev/null || true; rm -rf --one-file-system "$staging"' EXIT
    chroot "$root" apt-get update -qq >>"$staging/log" 2>&1 \
      && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends cloud-init \
        >>"$staging/log" 2>&1 || { tail -20 "$staging/log" >&2; exit 1; }
    umount "$root/proc"
    # NoCloud only (without a seed cloud-init stays off); the lab's network is up before systemd starts, and the
    # machine's apt sources are the test's to choose.
    printf 'datasource_list: [ NoCloud ]\nnetwork: {config: disabled}\napt: {preserve_sources_list: true}\n' \
      > "$root/etc/cloud/cloud.cfg.d/90-kintsugi-lab.cfg"
  fi
  rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*_Packages
  echo kintsugi-lab > "$root/etc/hostname"
  # minbase leaves /etc/hosts empty: localhost for both families, and the machine's own name.
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 kintsugi-lab\n' > "$root/etc/hosts"
  # The initramfs mounts this disk read-write before handing over; systemd-remount-fs reads this line.
  echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$root/etc/fstab"
  # A machine id of its own: an empty one would make systemd's first boot prompt on the console (systemd-firstboot).
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$root/etc/machine-id"
  echo >> "$root/etc/machine-id"
  ln -sf /dev/null "$root/etc/systemd/system/systemd-firstboot.service"
  # Journal kept on disk, so a test reads the previous boot's too.
  mkdir -p "$root/var/log/journal"
  # ttyS0 is the lab's console, never a login prompt.
  ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
  ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
  # The boot's command: after multi-user.target is reached (every enabled unit has started or failed), its output on
  # ttyS1 and its exit status on ttyS2, as the initramfs guests do; then a clean power-off.
  cat > "$root/usr/local/sbin/kintsugi-lab-run" <<'RUN'
#!/bin/sh
for tty in /dev/ttyS1 /dev/ttyS2; do stty -F $tty raw -echo 2>/dev/null; done
echo "ready $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS2
cd /root
{ sh /lab/command; echo $? > /run/kintsugi-lab-rc; } 2>&1 | tee /dev/ttyS1
rc=$(cat /run/kintsugi-lab-rc 2>/dev/null || echo 255)
rm -f /lab/command
sync
echo "exit $rc" > /dev/ttyS2
systemctl --no-block poweroff
RUN
  chmod 0755 "$root/usr/local/sbin/kintsugi-lab-run"
  cat > "$root/etc/systemd/system/kintsugi-lab.service" <<'UNIT'
[Unit]
Description=Kintsugi lab: run this boot's command, then power off
After=multi-user.target
ConditionPathExists=/lab/command

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kintsugi-lab-run
StandardOutput=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/kintsugi-lab.service "$root/etc/systemd/system/multi-user.target.wants/kintsugi-lab.service"
  mkdir -p "$root/lab"
  truncate -s 3G "$staging/image"
  mkfs.ext4 -q -F -L kintsugi-root -d "$root" "$staging/image"
  mv "$staging/image" "$image"
) 9>"$cache/.lock"
echo "$image"
