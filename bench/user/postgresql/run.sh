#!/usr/bin/env bash
# From source fix to patched PostgreSQL, end to end, with the published kintsugi binary: Debian's postgresql-15
# (15.18-0+deb12u1) runs a pgbench load (8 clients); `kintsugi user build --package postgresql-15=VERSION` turns an
# upstream 15.19 commit (verbatim) into a patch against the real postgres binary from nothing else (it fetches the
# source package and configures it as Debian's build does, once, cached), `kintsugi user apply` patches the
# postmaster and every backend; the fix is checked through SQL in a new connection. Then a second fix to the same
# package is built warm (the configured tree is cached) and applied, both are reverted, and pgbench must report
# no failed transaction. Prints the figures docs/benchmarks.md records.
# Usage: bench/user/postgresql/run.sh   (as root; ./kintsugi publishes artifacts/bin/kintsugi first if needed)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
fixtures="$repo/tests/fixtures/user/postgresql-15"
# upstream's REL_15_STABLE commits, verbatim (tests/fixtures/user/postgresql-15/README.md)
money_fix="$fixtures/d782c97e1-money-division-by-minus-one.patch"
rule_fix="$fixtures/eada45dd8-rename-rule-to-return.patch"
"$repo/kintsugi" version >/dev/null
kintsugi="$repo/artifacts/bin/kintsugi"
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

start=$(now)
version=15.18-0+deb12u1
eval "$("$here/prepare.sh" "$version")"
prepared=$(now)
bin="$(dirname "$POSTGRES")"
work="$(mktemp -d /tmp/kintsugi-pgbench-XXXXXX)"
chown nobody "$work"; chmod 0755 "$work"
export LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu" PGHOST="$work" PGPORT=54331 PGUSER=postgres PGDATABASE=postgres
cleanup() { runuser -u nobody -- "$bin/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
runuser -u nobody -- "$bin/initdb" -D "$work/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
runuser -u nobody -- "$bin/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
  -o "-k $work -c listen_addresses='' -p $PGPORT -c max_connections=50 -c fsync=off" start >/dev/null
"$bin/pgbench" -i -q -s 2 >/dev/null 2>&1
echo "SELECT '12.34'::money / -1, '12.34'::money / (-1)::int4;" > "$work/money.sql"
"$bin/pgbench" -n -c 8 -j 2 -T 60 -b tpcb-like@1 -f "$work/money.sql@1" > "$work/pgbench.out" 2>&1 &
load=$!
sleep 3
edge="SELECT '-92233720368547758.08'::money / -1"
echo "before: $(psql -X -At -c "$edge" 2>&1 | head -1)"

t0=$(now)
"$kintsugi" user build "$POSTGRES" --package "postgresql-15=$version" --fix "$money_fix" \
  --name pg15-money-divide -o "$work/money.kup.json" >/dev/null
t1=$(now)
"$kintsugi" user apply "$work/money.kup.json" > "$work/apply1.out"
t2=$(now)
echo "after:  $(psql -X -At -c "$edge" 2>&1 | head -1)"
processes=$(grep -c ": applied" "$work/apply1.out" || true)
pauses=$(grep -o "paused [0-9.]* ms" "$work/apply1.out" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {printf "median %.2f ms, worst %.2f ms", a[int((NR+1)/2)], a[NR]}')

psql -X -q -c "CREATE TABLE bench_rules (a int); CREATE RULE r AS ON INSERT TO bench_rules DO INSTEAD NOTHING;"
t3=$(now)
"$kintsugi" user build "$POSTGRES" --package "postgresql-15=$version" --fix "$rule_fix" \
  --name pg15-rename-rule -o "$work/rule.kup.json" >/dev/null
t4=$(now)
"$kintsugi" user apply "$work/rule.kup.json" > "$work/apply2.out"
t5=$(now)
echo "second fix: $(psql -X -At -c 'ALTER RULE r ON bench_rules RENAME TO "_RETURN"' 2>&1 | head -1)"
"$kintsugi" user revert --all > "$work/revert.out"
echo "reverted: $(psql -X -At -c "$edge" 2>&1 | head -1)"
wait $load || { cat "$work/pgbench.out"; echo "pgbench failed" >&2; exit 1; }
grep -E "number of transactions actually processed|number of failed transactions: [0-9]+ \(|tps =" "$work/pgbench.out" | head -3

echo
echo "| step | seconds |"
echo "|---|---|"
echo "| prepare.sh (the binary packages; cached after the first run) | $(seconds "$start" "$prepared") |"
echo "| kintsugi user build --package, first fix (money division, cash.c; includes fetching and configuring the source when not cached) | $(seconds "$t0" "$t1") |"
echo "| kintsugi user apply, $processes processes ($pauses) | $(seconds "$t1" "$t2") |"
echo "| **source fix to patched PostgreSQL (build + apply)** | **$(seconds "$t0" "$t2")** |"
echo "| kintsugi user build, second fix warm (rule rename, rewriteDefine.c) | $(seconds "$t3" "$t4") |"
echo "| kintsugi user apply, second fix | $(seconds "$t4" "$t5") |"
echo "load average: $(cat /proc/loadavg)"
