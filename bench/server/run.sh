#!/usr/bin/env bash
# Server load benchmark: 10,000 distinct simulated machines checking in against one kintsugi-server
# process, on SQLite and on PostgreSQL (a throwaway cluster from Debian's postgresql package, started here).
# Usage: bench/server/run.sh [sqlite|postgres|all] [extra Kintsugi.Server.Bench options, e.g. --https]
#        bench/server/run.sh import [MIB]: the server's peak memory while it imports (then exports) MIB MiB (200)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
which="${1:-all}"; shift || true
dotnet build -c Release "$here" -nologo -v q >/dev/null
if [ "$which" = import ]; then
  exec dotnet "$here/bin/Release/net10.0/Kintsugi.Server.Bench.dll" --backend sqlite --import-mib "${1:-200}"
fi
bench=(dotnet "$here/bin/Release/net10.0/Kintsugi.Server.Bench.dll" --machines 10000 --seconds 20 --concurrency 64 "$@")
if [ "$which" = sqlite ] || [ "$which" = all ]; then "${bench[@]}" --backend sqlite; fi
if [ "$which" = postgres ] || [ "$which" = all ]; then
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  dir=$(mktemp -d /tmp/kintsugi-bench-pg.XXXXXX); chown postgres:postgres "$dir"
  port=$((20000 + RANDOM % 20000))
  runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c synchronous_commit=on" start >/dev/null
  trap 'runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null; rm -rf "$dir"' EXIT
  runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres kintsugi_bench
  "${bench[@]}" --backend postgres --postgres "Host=127.0.0.1;Port=$port;Username=postgres;Database=kintsugi_bench;Maximum Pool Size=100"
fi
