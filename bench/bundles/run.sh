#!/usr/bin/env bash
# The bundle reader's speed on damaged input (docs/benchmarks.md, "Bundles: damaged input"): the tamper
# specification's 4,000 seeded mutations, timed. Usage: bench/bundles/run.sh [ROUNDS] (default 5)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dotnet build -c Release "$here" -nologo -v q >/dev/null
echo "$(date -u '+%F %T UTC'), $(nproc) cores, commit $(git -C "$here" rev-parse --short HEAD)," \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"
dotnet "$here/bin/Release/net10.0/Kintsugi.Bundles.Bench.dll" "${1:-5}"
