#!/usr/bin/env bash
# Differ benchmark: the largest kernel objects of a distribution kernel, each compiled before and after a
# one-function fix (bench/diff/fixes/) with the distribution's flags plus -ffunction-sections -fdata-sections;
# for each pair, read both, diff, write the output: median wall time of RUNS in-process runs, and the whole
# process's peak memory (/usr/bin/time -v, maximum resident set size). Works from a cold cache: the kernel is
# fetched and its tree prepared by the builder's own API (shared, locked cache; KINTSUGI_CACHE overrides).
# Usage: bench/diff/run.sh [RELEASE]   (default: the 6.1 cloud kernel); RUNS=7 by default
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
release="${1:-6.1.0-56-cloud-amd64}"
runs="${RUNS:-7}"
dotnet build -c Release "$here" -nologo -v q >/dev/null
bench=(dotnet "$here/bin/Release/net10.0/Kintsugi.Diff.Bench.dll")
out=$(mktemp -d /var/tmp/kintsugi-bench-diff.XXXXXX)
trap 'rm -rf "$out"' EXIT
"${bench[@]}" compile "$release" "$out" "$here"/fixes/*.patch > "$out/units"
echo "$(date -u '+%F %T UTC'), $(nproc) cores, commit $(git -C "$here" rev-parse --short HEAD), $release, $runs runs per pair"
printf '| object | size | what the diff found | median ms | first run ms | peak RSS MB | load (1 min) |\n|---|---|---|---|---|---|---|\n'
while read -r unit; do
  load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -v -o "$out/time" "${bench[@]}" diff "$out/original/$unit" "$out/patched/$unit" "$runs" > "$out/line"
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$out/time")
  line=$(cat "$out/line")
  field() { sed -E "s/.*$1=([0-9]+).*/\1/" <<< "$line"; }
  found=$(sed -E 's/^([a-z_]+=[0-9]+ )+//' <<< "$line")
  printf '| %s | %.1f MiB | %s | %s | %s | %d | %s |\n' "$unit" "$(echo "$(field input_bytes) / 1048576" | bc -l)" \
    "$found" "$(field median_ms)" "$(field first_ms)" "$((rss_kb / 1024))" "$load"
done < "$out/units"
