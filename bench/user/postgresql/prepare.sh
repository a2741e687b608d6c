#!/usr/bin/env bash
# Prepares, once per version and shared through the cache, the binaries the PostgreSQL proof of `kintsugi user`
# runs: Debian's own postgresql-15, postgresql-client-15 and libpq5 at exactly VERSION, unpacked into a private
# root (the host's installed packages are neither used nor changed). The source is not prepared here: `kintsugi
# user build --package postgresql-15=VERSION` fetches it and configures it as Debian's build does.
# apt runs with a private sources list and state directory in the cache; the host's sources are never read
# or changed. Prints shell assignments (ROOT=, POSTGRES=) on standard output.
# Usage: prepare.sh [VERSION]   (default 15.18-0+deb12u1); KINTSUGI_CACHE defaults to /var/cache/kintsugi.
set -euo pipefail
version="${1:-15.18-0+deb12u1}"
cache="${KINTSUGI_CACHE:-/var/cache/kintsugi}"
apt_dir="$cache/user/apt"
base="$cache/user/postgresql-15_$version"
mkdir -p "$base" "$apt_dir"
exec 9>"$base/.lock"
flock 9
if [ ! -f "$base/.prepared" ]; then
  log() { echo "prepare: $*" >&2; }
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d" "$apt_dir/preferences.d"
  touch "$apt_dir/status"
  cat > "$apt_dir/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
LIST
  apt_options=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::State=$apt_dir" -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
    -o "Dir::Cache=$apt_dir/cache" -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$apt_dir/preferences.d"
    -o APT::Architectures=amd64 -o Acquire::Languages=none -o APT::Sandbox::User=root
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false)
  log "updating the private package lists (bookworm main, with sources)"
  apt-get "${apt_options[@]}" -qq update >&2
  rm -rf "$base/debs" "$base/root"
  mkdir -p "$base/debs" "$base/root"
  log "downloading postgresql-15 $version (binaries)"
  (cd "$base/debs" && apt-get "${apt_options[@]}" -qq download "postgresql-15=$version" "postgresql-client-15=$version" \
    "libpq5=$version" >&2)
  for deb in "$base"/debs/*.deb; do dpkg-deb -x "$deb" "$base/root"; done
  # The package's runtime libraries must be on the host (the installed package pulls them in on Debian 12).
  missing=$(ldd "$base/root/usr/lib/postgresql/15/bin/postgres" "$base/root/usr/lib/postgresql/15/bin/pgbench" | grep "not found" | grep -v libpq || true)
  if [ -n "$missing" ]; then
    log "installing the runtime libraries postgresql-15 depends on"
    apt-get install -y -qq --no-install-recommends libicu72 libxml2 liblz4-1 libzstd1 libpam0g libssl3 libgssapi-krb5-2 libldap-2.5-0 \
      libsystemd0 libllvm14 libreadline8 >&2
  fi
  touch "$base/.prepared"
fi
echo "ROOT='$base/root'"
echo "POSTGRES='$base/root/usr/lib/postgresql/15/bin/postgres'"
