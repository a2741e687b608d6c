#!/usr/bin/env bash
# Runs the whole test suite: installs the Debian packages the tests need, publishes the kintsugi binary
# (it runs on the host and inside every lab guest), then runs every test project. The distribution
# kernels the tests boot are fetched into /var/cache/kintsugi on first use (KINTSUGI_CACHE overrides).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
"$here/scripts/install-prerequisites.sh"
"$here/kintsugi" version >/dev/null   # publishes artifacts/bin/kintsugi and kintsugi-server when missing or stale
export KINTSUGI_GUEST_BINARY="$here/artifacts/bin/kintsugi"
results="$here/artifacts/test-results"
rm -rf "$results"
status=0
dotnet build "$here/Kintsugi.slnx" -nologo -v q
# One test project at a time: each boots its own VMs (single-threaded TCG, one core each), and test
# collections inside a project already run two at a time, which fills the two cores.
dotnet test "$here/Kintsugi.slnx" --no-build -m:1 --logger "trx" --results-directory "$results" "$@" || status=$?
# One closing line over every project, in the form CI reads: N passed, N failed, N skipped.
passed=0; failed=0; skipped=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  value() { local v; v=$(echo "$counters" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"); echo "${v:-0}"; }
  passed=$((passed + $(value passed))); failed=$((failed + $(value failed))); skipped=$((skipped + $(value notExecuted)))
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
