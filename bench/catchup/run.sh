#!/usr/bin/env bash
# Catch-up benchmark: the whole security content of one Debian stable update of the 6.1 line (linux-source-6.1
# 6.1.176-1 → 6.1.187-1, hundreds of changed files) as one livepatch for the 6.1.0-50 cloud kernel, cold (an
# empty cache: downloads, both sources, the split, the prepared tree, every trial) and rerun (the same output
# directory: every trial's outcome and every pristine object is reused), with the stage breakdown and the
# report's totals from `kintsugi kernel catch-up --json`.
# Usage: bench/catchup/run.sh [RELEASE VERSION]   (default: 6.1.0-50-cloud-amd64 6.1.187-1)
# Exit status 10 (built, but something still needs a reboot) is the expected outcome of a real update.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
release="${1:-6.1.0-50-cloud-amd64}"
version="${2:-6.1.187-1}"
"$root/kintsugi" version >/dev/null   # publish first: building the binary is not the catch-up's time
out=$(mktemp -d /var/tmp/kintsugi-bench-catchup.XXXXXX)
trap 'rm -rf "$out"' EXIT
export KINTSUGI_CACHE="$out/cache"
printf '| run | total s | files | built | refused | no code | not built | CVEs covered / need a reboot / not affected | stages (s) |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for run in cold rerun; do
  start=$(date +%s.%N)
  status=0
  "$root/kintsugi" -v kernel catch-up --target "$release" --to "$version" -o "$out/catch-up" --json > "$out/$run.json" 2> "$out/$run.log" || status=$?
  end=$(date +%s.%N)
  # CATCHUP_LOGS=DIR keeps each run's progress log (kintsugi -v), for reading where the time went.
  if [ -n "${CATCHUP_LOGS:-}" ]; then mkdir -p "$CATCHUP_LOGS"; cp "$out/$run.log" "$CATCHUP_LOGS/$run.log"; fi
  if [ "$status" -ne 0 ] && [ "$status" -ne 10 ]; then cat "$out/$run.log" >&2; exit "$status"; fi
  jq -r --arg run "$run" --arg total "$(printf '%.1f' "$(echo "$end - $start" | bc)")" \
    '"| \($run) | \($total) | \(.totals.changedFiles) | \(.totals.built) | \(.totals.refused) | \(.totals.noCode) | \(.totals.notBuilt) | \(.totals.covered) / \(.totals.needsReboot + .totals.unmapped) / \(.totals.notAffected) | \([.stages[] | "\(.stage) \(.seconds)"] | join(", ")) |"' \
    "$out/$run.json"
done
cp "$out/catch-up/catch-up.txt" "${CATCHUP_REPORT:-/var/tmp/kintsugi-catchup-report.txt}"
