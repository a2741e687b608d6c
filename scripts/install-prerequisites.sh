#!/usr/bin/env bash
# Installs the Debian packages Kintsugi's lab, builds and tests need. Idempotent; needs root.
set -euo pipefail
packages=(
  qemu-system-x86   # the lab: boots distribution kernels under software emulation
  busybox-static    # guest userland for the generated initramfs
  cpio              # inspecting initramfs images by hand
  xz-utils zstd lz4 # distribution modules and kernel payloads are compressed
  file
  make gcc-12 libc6-dev bc  # kbuild for livepatch modules
  flex bison libssl-dev     # preparing full kernel source trees (make prepare)
  patch binutils            # checking fixes against a tree; readelf and objcopy in tests
  debhelper                 # kintsugi user build configures a package's source with its own dh sequence
  gcc libssl3               # user-space patch tests compile C programs (gcc); one links Debian's libcrypto.so.3
  openssl                   # module signing keys in tests; verifying module signatures
  dwarves           # pahole: BTF for modules of kernels that ship a BTF vmlinux (6.12)
  libelf-dev
  e2fsprogs         # persistent lab disks
  kmod
  jq                # the benchmarks read the builder's --json
  time              # /usr/bin/time -v: the differ benchmark's peak memory
  postgresql        # the patch server's PostgreSQL tests start their own throwaway cluster
  chromium          # the dashboard is tested in headless Chromium
  lintian           # the Debian packages are checked with lintian
  debootstrap       # ... and installed, upgraded and purged in a Debian 12 root (scripts/debian-root.sh)
  strace            # the server's secrets are checked to be created owner-only from its own system calls
  ansible-core      # the deployment playbook (docs/deploy) is run from this host over SSH against lab machines
  openssh-client    # ... and the test reads each machine's state over SSH
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "kintsugi: missing Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "kintsugi: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
