#!/usr/bin/env bash
# The vmlinux symbol table decoded from each kernel's image (ImageKallsyms) instead of read from /proc/kallsyms of a
# lab boot: wall time to decompress the vmlinux (once) and to decode its kallsyms tables (first and median of RUNS
# in-process runs, and the median of their CPU times, which depends less on the machine's load), and whether the table
# equals the one a lab boot captured (KINTSUGI_CACHE/kernels/RELEASE/kallsyms, when present). Kernels are fetched
# into the shared cache when missing.
# Usage: bench/kallsyms/run.sh [RELEASE...]   (default: one kernel of each line); RUNS=5 by default
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runs="${RUNS:-5}"
releases=("$@")
[ ${#releases[@]} -gt 0 ] || releases=(5.10.0-46-cloud-amd64 6.1.0-56-cloud-amd64 6.12.117+deb12-cloud-amd64
  6.12.117+deb13-cloud-amd64)
dotnet build -c Release "$here" -nologo -v q >/dev/null
echo "$(date -u '+%F %T UTC'), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), commit $(git -C "$here" rev-parse --short HEAD), $runs runs"
printf '| kernel | symbols | name index | decompress ms | decode ms (first) | decode ms (median) | decode CPU ms (median) | against the boot |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for release in "${releases[@]}"; do
  dotnet "$here/bin/Release/net10.0/Kintsugi.Kallsyms.Bench.dll" decode "$release" "$runs"
done
