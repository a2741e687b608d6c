#!/usr/bin/env bash
# Side by side with kpatch-build (issue 13, deliverable 7): the same one-function fix
# (samples/fixes/proc-cmdline.patch) for the same 6.1 cloud kernel, built by kpatch-build 0.9.10 (from
# Debian's source package) and by `kintsugi kernel build`, each cold and warm; then kpatch-build on the
# Debian 13 6.12 cloud kernel (built with CONFIG_X86_KERNEL_IBT).
#
# Usage: bench/kpatch-build/run.sh [STEP ...]
#   STEP: fetch (kpatch's source through a private trixie deb-src list), tools (build kpatch-build),
#         kpatch (kpatch-build cold then warm), kintsugi (kintsugi kernel build cold then warm),
#         ibt (kpatch-build on the 6.12 IBT kernel), all (default: every step in that order);
#         progress (while kpatch-build runs: units compiled so far and the CPU seconds its process tree used).
# Environment: KPATCH_BENCH_DIR (work directory, default /var/cache/kintsugi/kpatch-build),
#   KPATCH_BENCH_RELEASE (default 6.1.0-56-cloud-amd64), KPATCH_BENCH_IBT_RELEASE
#   (default 6.12.117+deb13-cloud-amd64), KINTSUGI_CACHE (the shared cache the kernels come from).
# Results are appended to $KPATCH_BENCH_DIR/results.tsv: step, run, wall seconds, CPU seconds, exit code,
# the 1-minute load average at the start, at the end and the highest sampled every 15 s during the run.
# Heavy work runs under `nice -n 19`: the machine is shared. Nothing of kpatch enters the repository.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${KPATCH_BENCH_DIR:-/var/cache/kintsugi/kpatch-build}"
release="${KPATCH_BENCH_RELEASE:-6.1.0-56-cloud-amd64}"
ibt_release="${KPATCH_BENCH_IBT_RELEASE:-6.12.117+deb13-cloud-amd64}"
shared_cache="${KINTSUGI_CACHE:-/var/cache/kintsugi}"
patch="$root/samples/fixes/proc-cmdline.patch"
kpatch_version=0.9.10
kpatch_src="$work/src/kpatch-$kpatch_version"
results="$work/results.tsv"
mkdir -p "$work"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# timed NAME RUN LOGFILE CMD...: runs CMD, records wall time, exit code and load averages.
timed() {
  local name="$1" run="$2" logfile="$3"; shift 3
  local start end rc=0 l0 sampler peakfile="$work/.peak-load.${name// /-}.$run"
  l0=$(load1); echo "$l0" > "$peakfile"
  ( while sleep 15; do l=$(load1); p=$(cat "$peakfile"); \
      if [ "$(echo "$l > $p" | bc)" = 1 ]; then echo "$l" > "$peakfile"; fi; done ) &
  sampler=$!
  # CPU seconds (user + system of the command and everything it waited for) do not depend on how
  # busy the shared machine is; wall time does.
  start=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$peakfile.cpu" "$@" > "$logfile" 2>&1 || rc=$?
  end=$(date +%s.%N)
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  printf '%s\t%s\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$(echo "$end - $start" | bc)" \
    "$(tail -1 "$peakfile.cpu" | awk '{print $1 + $2}')" "$rc" "$l0" "$(load1)" "$(cat "$peakfile")" \
    "$(date -u +%FT%TZ)" | tee -a "$results"
  return 0
}

# A private apt configuration that sees only trixie's deb-src index: the host's sources are untouched.
apt_options() {
  local d="$work/apt"
  printf '%s\n' -o "Dir::Etc::SourceList=$d/sources.list" -o "Dir::Etc::SourceParts=$d/sources.list.d" \
    -o "Dir::State=$d" -o "Dir::State::Lists=$d/lists" -o "Dir::State::status=$d/status" \
    -o "Dir::Cache=$d/cache" -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$d/preferences.d" \
    -o "APT::Architectures=amd64" -o "Acquire::Languages=none" -o "APT::Sandbox::User=root"
}

step_fetch() {
  local d="$work/apt"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/sources.list.d" "$d/preferences.d" "$work/src"
  [ -f "$d/status" ] || : > "$d/status"
  echo 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' \
    > "$d/sources.list"
  mapfile -t opts < <(apt_options)
  log "apt-get update (private trixie deb-src list in $d)"
  apt-get "${opts[@]}" -q update >&2
  log "apt-get source --download-only kpatch"
  # Only the upstream tarball downloads from this mirror (the .dsc and Debian's packaging answer 404);
  # apt checks the tarball against the Sources index's hashes before keeping it.
  (cd "$work/src" && apt-get "${opts[@]}" source --download-only "kpatch=$kpatch_version-1" >&2) || true
  [ -s "$work/src/kpatch_$kpatch_version.orig.tar.gz" ] \
    || { echo "kpatch_$kpatch_version.orig.tar.gz did not download" >&2; exit 1; }
  sha256sum "$work/src/kpatch_$kpatch_version.orig.tar.gz" >&2
}

step_tools() {
  rm -rf "$kpatch_src"
  tar -xzf "$work/src/kpatch_$kpatch_version.orig.tar.gz" -C "$work/src"
  # kpatch-build's own needs, from the host's Debian 12 sources: gawk for the script, libelf-dev for
  # create-diff-object; bc, bison, flex and libssl-dev build the kernel (kintsugi's demo installs those).
  local missing=() pkg
  for pkg in gawk libelf-dev bc bison flex libssl-dev dwarves; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
  fi
  log "building create-diff-object and create-klp-module"
  nice -n 19 make -C "$kpatch_src/kpatch-build" -j2 >&2
}

kernel_json() { echo "$shared_cache/kernels/$1/kernel.json"; }

# The kernel's config, debug vmlinux and linux-source tarball, through kintsugi's own fetch (shared cache).
ensure_kernel() {
  local rel="$1"; shift
  if ! [ -f "$(kernel_json "$rel")" ] || [ "$(jq -r '.sourceTarball' "$(kernel_json "$rel")")" = null ] \
     || { [ "$*" = --debug ] && [ "$(jq -r '.debugVmlinux' "$(kernel_json "$rel")")" = null ]; }; then
    log "kintsugi kernel fetch $rel --headers --source $*"
    KINTSUGI_CACHE="$shared_cache" "$root/kintsugi" kernel fetch "$rel" --headers --source "$@" >&2
  fi
}

# A fresh, unbuilt source tree of the exact kernel: Debian's linux-source tarball, the distribution's
# .config, and Debian's Module.symvers (see step_kpatch).
fresh_tree() {
  local rel="$1" tree="$2" json tarball
  json="$(kernel_json "$rel")"
  tarball="$(jq -r '.sourceTarball' "$json")"
  rm -rf "$tree"; mkdir -p "$tree"
  tar -xJf "$tarball" -C "$tree" --strip-components=1
  cp "$(jq -r '.config' "$json")" "$tree/.config"
  cp "$(jq -r '.headersDirectory' "$json")/Module.symvers" "$tree/Module.symvers"
}

kpatch_build() {
  local tree="$1" cachedir="$2" out="$3" config="$4" vmlinux="$5"
  mkdir -p "$out"
  CACHEDIR="$cachedir" nice -n 19 "$kpatch_src/kpatch-build/kpatch-build" -j "$(nproc)" -t vmlinux \
    -s "$tree" -c "$config" -v "$vmlinux" -o "$out" -n livepatch-proc-cmdline "$patch"
}

step_kpatch() {
  ensure_kernel "$release" --debug
  local json tree="$work/linux-$release" out="$work/out-$release"
  json="$(kernel_json "$release")"
  log "unpacking $(jq -r '.sourceTarball' "$json") into $tree"
  timed unpack "$release" "$work/unpack.log" "$here/run.sh" fresh_tree "$release" "$tree"
  # kpatch-build's default targets are "vmlinux modules" (the whole kernel, 1,119 modules for this
  # config). The fix is in vmlinux, so -t vmlinux is the least kpatch-build can build; it then needs the
  # Module.symvers a modules build writes, which Debian's headers package ships for this exact kernel.
  rm -rf "$work/kpatch-cache" "$out"
  log "kpatch-build cold (log: $work/kpatch-cold.log, kpatch's own: $work/kpatch-cache/build.log)"
  timed kpatch-build cold "$work/kpatch-cold.log" \
    "$here/run.sh" kpatch_build "$tree" "$work/kpatch-cache" "$out-cold" "$(jq -r '.config' "$json")" "$(jq -r '.debugVmlinux' "$json")"
  log "kpatch-build warm"
  timed kpatch-build warm "$work/kpatch-warm.log" \
    "$here/run.sh" kpatch_build "$tree" "$work/kpatch-cache" "$out-warm" "$(jq -r '.config' "$json")" "$(jq -r '.debugVmlinux' "$json")"
  ls -la "$out-cold" "$out-warm" >&2 || true
}

step_kintsugi() {
  "$root/kintsugi" version >/dev/null   # publish first: building the binary is not the builder's time
  local fresh="$work/kintsugi-cache" out="$work/kintsugi-out"
  rm -rf "$fresh" "$out"; mkdir -p "$out"
  for run in cold warm; do
    log "kintsugi kernel build $run (KINTSUGI_CACHE=$fresh)"
    timed "kintsugi kernel build" "$run" "$work/kintsugi-$run.log" \
      env KINTSUGI_CACHE="$fresh" nice -n 19 "$root/kintsugi" kernel build --target "$release" --patch "$patch" \
      -o "$out/$run" --json
  done
  rm -rf "$fresh"
}

step_ibt() {
  ensure_kernel "$ibt_release"
  local json config scratch="$work/ibt"
  json="$(kernel_json "$ibt_release")"
  config="$(jq -r '.config' "$json")"
  grep -H '^CONFIG_X86_KERNEL_IBT=' "$config" >&2
  # Debian 13's -dbg vmlinux is not needed to meet the refusal: kpatch-build reads the configuration
  # before it compiles or reads vmlinux beyond its version string, so the image's vmlinux (extracted from
  # vmlinuz) stands in for it, and an unbuilt tree is enough.
  rm -rf "$scratch"; mkdir -p "$scratch/out"
  fresh_tree "$ibt_release" "$scratch/linux"
  "$scratch/linux/scripts/extract-vmlinux" "$(jq -r '.vmlinuz' "$json")" > "$scratch/vmlinux"
  timed "kpatch-build ibt" "$ibt_release" "$work/kpatch-ibt.log" \
    env CACHEDIR="$scratch/cache" "$kpatch_src/kpatch-build/kpatch-build" \
    -s "$scratch/linux" -c "$config" -v "$scratch/vmlinux" -o "$scratch/out" "$patch"
  cat "$work/kpatch-ibt.log" >&2
}

# CPU seconds used so far by the running kpatch-build's process tree: every live process's own time plus
# the time of the children it has reaped (each dead process is counted in exactly one live ancestor).
step_progress() {
  local top pids ticks
  top=$(pgrep -o -f "$kpatch_src/kpatch-build/kpatch-build") || { echo "kpatch-build is not running" >&2; return 1; }
  pids=$(ps -e -o pid=,ppid= | awk -v top="$top" '{ parent[$1] = $2 } END {
    for (p in parent) { q = p; while (q != "" && q != 0 && q != top) q = parent[q]; if (q == top) print p } }')
  ticks=$(for p in $pids; do cut -d' ' -f14-17 "/proc/$p/stat" 2>/dev/null; done | awk '{ t += $1 + $2 + $3 + $4 } END { print t + 0 }')
  printf 'kpatch-build pid %s, running %s s; compiled (CC lines in its build.log): %s; CPU so far: %.0f s; load %s\n' \
    "$top" "$(ps -o etimes= -p "$top" | tr -d ' ')" "$(grep -c '^  CC ' "$work/kpatch-cache/build.log")" \
    "$(echo "$ticks / $(getconf CLK_TCK)" | bc -l)" "$(load1)"
}

# Everything runs from main, read whole before it starts: editing this file while a long run is under way
# must not change what that run executes next.
main() {
  # Internal entry points, so that timed() can run them under /usr/bin/time.
  case "${1:-}" in fresh_tree|kpatch_build) "$@"; return $?;; esac
  local steps=("$@") s
  [ ${#steps[@]} -gt 0 ] && [ "${steps[0]}" != all ] || steps=(fetch tools kpatch kintsugi ibt)
  for s in "${steps[@]}"; do "step_$s"; done
}
main "$@"; exit $?
