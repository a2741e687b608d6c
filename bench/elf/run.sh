#!/usr/bin/env bash
# Kintsugi.Elf speed goals (docs/benchmarks.md, "ELF model"): a 65,400-section object read and relaid out,
# and the slowest malformed variant of the unit tests' seeds. Usage: bench/elf/run.sh [ROUNDS] (default 5)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dotnet build -c Release "$here" -nologo -v q >/dev/null
echo "$(date -u '+%F %T UTC'), $(nproc) cores, commit $(git -C "$here" rev-parse --short HEAD)," \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"
dotnet "$here/bin/Release/net10.0/Kintsugi.Elf.Bench.dll" "${1:-5}"
