#!/usr/bin/env bash
# Builder benchmark: a one-function fix (samples/fixes/proc-cmdline.patch) built for each kernel line,
# cold (an empty cache: downloads, source preparation and the symbol-table boot included) and warm (the
# same cache again), with the builder's own breakdown by stage from `kintsugi kernel build --json`.
# Usage: bench/build/run.sh [RELEASE ...]   (default: the 6.1 and the 6.12 cloud kernels)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
releases=("$@")
[ ${#releases[@]} -gt 0 ] || releases=(6.1.0-56-cloud-amd64 6.12.117+deb12-cloud-amd64)
"$root/kintsugi" version >/dev/null   # publish first: building the binary is not the builder's time
out=$(mktemp -d /var/tmp/kintsugi-bench-build.XXXXXX)
trap 'rm -rf "$out"' EXIT
printf '| kernel | run | total s | stages (s) |\n|---|---|---|---|\n'
for release in "${releases[@]}"; do
  export KINTSUGI_CACHE="$out/cache"
  rm -rf "$KINTSUGI_CACHE"
  for run in cold warm; do
    start=$(date +%s.%N)
    "$root/kintsugi" kernel build --target "$release" --patch "$root/samples/fixes/proc-cmdline.patch" \
      -o "$out/$release-$run" --json > "$out/$run.json" 2> "$out/$run.log" || { cat "$out/$run.log" >&2; exit 1; }
    end=$(date +%s.%N)
    stages=$(jq -r '[.stages[] | "\(.stage) \(.seconds)"] | join(", ")' "$out/$run.json")
    printf '| %s | %s | %.1f | %s |\n' "$release" "$run" "$(echo "$end - $start" | bc)" "$stages"
  done
  rm -rf "$KINTSUGI_CACHE"
done
