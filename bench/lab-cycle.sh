#!/usr/bin/env bash
# Benchmarks the lab: wall time of `kintsugi lab run` from QEMU start to power-off, for a trivial command
# and for a full livepatch cycle (load, atomic replace, unload) of the test fixtures, on each kernel line.
# Usage: bench/lab-cycle.sh [runs]   (appends nothing; prints a Markdown table for docs/benchmarks.md)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-5}"
kintsugi="$here/kintsugi"
"$kintsugi" version >/dev/null
cache="${KINTSUGI_CACHE:-/var/cache/kintsugi}"
cycle='kintsugi kernel load /f/a.ko >/dev/null && kintsugi kernel load /f/b.ko >/dev/null && kintsugi kernel unload kintsugi_fixture_cmdline_b >/dev/null'
echo "| kernel | workload | runs | min s | median s | max s |"
echo "|---|---|---|---|---|---|"
for kernel in 6.1.0-56-cloud-amd64 6.12.117+deb12-cloud-amd64; do
  fixtures=$(ls -d "$cache/fixtures/$kernel"/*/ 2>/dev/null | head -1)
  [ -n "$fixtures" ] || { echo "no fixtures for $kernel: run ./test.sh once first" >&2; exit 1; }
  for workload in trivial cycle; do
    times=()
    for _ in $(seq "$runs"); do
      start=$(date +%s.%N)
      if [ "$workload" = trivial ]; then
        "$kintsugi" lab run --kernel "$kernel" -- true >/dev/null 2>&1
      else
        "$kintsugi" lab run --kernel "$kernel" --add "$fixtures/kintsugi_fixture_cmdline_a.ko:/f/a.ko" \
          --add "$fixtures/kintsugi_fixture_cmdline_b.ko:/f/b.ko" -- "$cycle" >/dev/null 2>&1
      fi
      end=$(date +%s.%N)
      times+=("$(echo "$end - $start" | bc)")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    min=$(echo "$sorted" | head -1); max=$(echo "$sorted" | tail -1)
    median=$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p")
    printf '| %s | %s | %d | %.1f | %.1f | %.1f |\n' "$kernel" "$workload" "$runs" "$min" "$median" "$max"
  done
done
