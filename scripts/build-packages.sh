#!/usr/bin/env bash
# Builds the Debian packages `kintsugi` and `kintsugi-server` from this checkout with dpkg-deb alone (no
# debhelper): the self-contained binaries, the systemd units of packaging/systemd, man pages generated from
# the commands' own --help, shell completion, and the default configuration. Writes OUT (default
# artifacts/deb) and prints the two .deb paths. KINTSUGI_DEB_REVISION sets the Debian revision (default 1);
# KINTSUGI_PACKAGE_BINARIES=DIR packs prebuilt binaries (DIR/kintsugi, DIR/server/) instead of publishing.
# KINTSUGI_DEB_COMPRESSION=xz|gzip|none (default xz, what is shipped): none is for test packages, which then build and
# install (under emulation, in lab guests) in seconds instead of minutes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/artifacts/deb}"
revision="${KINTSUGI_DEB_REVISION:-1}"
compression="${KINTSUGI_DEB_COMPRESSION:-xz}"
case "$compression" in xz|gzip|none) ;; *) echo "build-packages: KINTSUGI_DEB_COMPRESSION must be xz, gzip or none, not '$compression'" >&2; exit 2 ;; esac
upstream=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' "$here/Directory.Build.props")
version="$upstream-$revision"
# Reproducible: every date and mtime is the last commit's.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}"
maintainer="Kintsugi developers <kintsugi@lists.kintsugi.invalid>"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# ---- binaries ----
# KINTSUGI_PACKAGE_BINARIES=DIR packs binaries built (and tested) already: DIR/kintsugi and DIR/server/.
if [ -n "${KINTSUGI_PACKAGE_BINARIES:-}" ]; then
  cli="$KINTSUGI_PACKAGE_BINARIES/kintsugi"
  server_out="$KINTSUGI_PACKAGE_BINARIES/server"
else
  # kintsugi: the same self-contained single file ./kintsugi publishes (and the lab puts into guests).
  "$here/kintsugi" version >/dev/null
  cli="$here/artifacts/bin/kintsugi"
  # kintsugi-server: self-contained (Debian 12 has no ASP.NET Core runtime), native libraries beside it so
  # nothing is extracted at run time (the unit's file system is read-only).
  server_out="$here/artifacts/server-self-contained"
  if [ ! -x "$server_out/kintsugi-server" ] || [ -n "$(find "$here/src" "$here/Directory.Build.props" "$here/Directory.Packages.props" -newer "$server_out/kintsugi-server" -type f -print -quit)" ]; then
    echo "build-packages: publishing the self-contained kintsugi-server (a few minutes)..." >&2
    rm -rf "$server_out"
    dotnet publish "$here/src/Kintsugi.Server" -c Release -r linux-x64 --self-contained true -p:PublishSingleFile=true \
      -p:IncludeNativeLibrariesForSelfExtract=false -o "$server_out" -nologo -v q >&2
  fi
fi
[ -x "$cli" ] && [ -x "$server_out/kintsugi-server" ] || { echo "build-packages: missing binaries ($cli, $server_out/kintsugi-server)" >&2; exit 1; }
# `kintsugi server run --help` (for its man page) hands over to this server binary.
export KINTSUGI_SERVER_BINARY="$server_out/kintsugi-server"

# ---- helpers ----
install_file() { # MODE SOURCE DEST
  install -D -m "$1" "$2" "$3"
}

# Turns `kintsugi ... --help` text into a man page section: preformatted, roff-escaped.
roff_text() {
  sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}

# A man page per command group: kintsugi(1) for the root and its single commands, kintsugi-GROUP(1) for each
# group with a section per subcommand. From the binary's own help, so it never disagrees with it.
man_page() { # GROUP OUTFILE
  local group="$1" file="$2" title name summary
  if [ -z "$group" ]; then title="KINTSUGI"; name="kintsugi"; else title="KINTSUGI-${group^^}"; name="kintsugi-$group"; fi
  summary=$("$cli" $group --help | sed -n '2p' | sed 's/^ *//' | cut -c1-120)
  {
    echo ".TH $title 1 \"$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)\" \"kintsugi $upstream\" \"Kintsugi manual\""
    echo ".SH NAME"
    echo "$name \\- $(echo "${summary%%:*}" | roff_text)"
    echo ".SH SYNOPSIS"
    echo ".B kintsugi${group:+ $group}"
    echo "[\\fICOMMAND\\fR] [\\fIOPTIONS\\fR]"
    echo ".SH DESCRIPTION"
    echo ".nf"
    "$cli" $group --help | roff_text
    echo ".fi"
    local sub
    for sub in $("$cli" $group --help | awk '/^Commands:/{c=1;next} c&&/^  [a-z]/{print $1} c&&/^$/{c=0}'); do
      [ -z "$group" ] && [ -n "$("$cli" $sub --help | awk '/^Commands:/{print "x"}')" ] && continue
      echo ".SH \"${group:+${group^^} }${sub^^}\""
      echo ".nf"
      "$cli" $group $sub --help | roff_text
      echo ".fi"
    done
    echo ".SH SEE ALSO"
    if [ -z "$group" ]; then
      echo ".BR kintsugi-kernel (1), kintsugi-agent (1), kintsugi-keys (1), kintsugi-bundle (1), kintsugi-server (1), kintsugi-lab (1)"
    else
      echo ".BR kintsugi (1)"
    fi
  } > "$file"
  gzip -9n "$file"
}

control_file() { # PACKAGE ROOT DEPENDS DESCRIPTION...
  local package="$1" root="$2" depends="$3"; shift 3
  local size
  size=$(du -k -s --apparent-size --exclude=DEBIAN "$root" | cut -f1)
  {
    echo "Package: $package"
    echo "Version: $version"
    echo "Architecture: amd64"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    echo "Depends: $depends"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Homepage: https://kintsugi.invalid/"
    printf 'Description: %s\n' "$1"; shift
    local line
    for line in "$@"; do if [ -z "$line" ]; then echo " ."; else echo " $line"; fi; done
  } > "$root/DEBIAN/control"
}

changelog() { # PACKAGE ROOT
  local dir="$2/usr/share/doc/$1"
  mkdir -p "$dir"
  # Each remaining lintian tag, overridden with the reason (packaging/debian/PACKAGE/lintian-overrides).
  install -D -m 0644 "$here/packaging/debian/$1/lintian-overrides" "$2/usr/share/lintian/overrides/$1"
  {
    echo "$1 ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the Kintsugi checkout at $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo
    echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
  } > "$dir/changelog.Debian"
  gzip -9n "$dir/changelog.Debian"
  install -m 0644 "$here/packaging/debian/copyright" "$dir/copyright"
}

finish() { # PACKAGE ROOT
  local package="$1" root="$2"
  # conffiles: everything under /etc.
  (cd "$root" && find etc -type f -printf '/%p\n' | sort) > "$root/DEBIAN/conffiles"
  [ -s "$root/DEBIAN/conffiles" ] || rm "$root/DEBIAN/conffiles"
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
  chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"
  find "$root" -type d -exec chmod 0755 {} +
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  local deb="$out/${package}_${version}_amd64.deb"
  dpkg-deb --root-owner-group "-Z$compression" --build "$root" "$deb" >/dev/null
  echo "$deb"
}

# ---- kintsugi ----
root="$work/kintsugi"
mkdir -p "$root/DEBIAN"
install_file 0755 "$cli" "$root/usr/bin/kintsugi"
for unit in kintsugi-agent.service kintsugi-kernel.service; do
  mkdir -p "$root/lib/systemd/system"
  # The header comment says how the template is filled; the installed unit starts at [Unit].
  sed -n '/^\[Unit\]/,$p' "$here/packaging/systemd/$unit" \
    | sed -e 's|"@KINTSUGI@"|/usr/bin/kintsugi|' -e 's|"@CONFIG@"|/etc/kintsugi/agent.conf|' -e 's|@CONFIG@|/etc/kintsugi/agent.conf|' \
    > "$root/lib/systemd/system/$unit"
  chmod 0644 "$root/lib/systemd/system/$unit"
done
install_file 0644 "$here/packaging/etc/agent.conf" "$root/etc/kintsugi/agent.conf"
install_file 0644 "$here/packaging/completion/kintsugi.bash" "$root/usr/share/bash-completion/completions/kintsugi"
install_file 0644 "$here/packaging/completion/_kintsugi" "$root/usr/share/zsh/vendor-completions/_kintsugi"
mkdir -p "$root/usr/share/man/man1"
man_page "" "$root/usr/share/man/man1/kintsugi.1"
for group in kernel agent keys bundle lab server; do man_page "$group" "$root/usr/share/man/man1/kintsugi-$group.1"; done
changelog kintsugi "$root"
for script in postinst prerm postrm; do install -m 0755 "$here/packaging/debian/kintsugi/$script" "$root/DEBIAN/$script"; done
control_file kintsugi "$root" "libc6 (>= 2.34), libgcc-s1, libstdc++6, libssl3 | libssl3t64" \
  "live patching of Linux kernels from your own servers" \
  "Kintsugi applies signed kernel livepatches to running machines without" \
  "reboots: load, transition, verify, atomic replace, revert, re-apply at" \
  "boot. This package has the kintsugi command, the agent that fetches" \
  "releases for this exact kernel from a Kintsugi patch server (or an" \
  "offline directory) and applies them (kintsugi-agent.service), and boot" \
  "re-application of installed patches (kintsugi-kernel.service)." \
  "" \
  "Enroll a machine with: kintsugi agent enroll --server URL --token-file F"
finish kintsugi "$root"

# ---- kintsugi-server ----
root="$work/kintsugi-server"
mkdir -p "$root/DEBIAN" "$root/usr/bin"
install_file 0755 "$server_out/kintsugi-server" "$root/usr/lib/kintsugi-server/kintsugi-server"
for lib in "$server_out"/*.so; do
  [ -e "$lib" ] || continue # none: a server with its native libraries inside (KINTSUGI_PACKAGE_BINARIES)
  install_file 0644 "$lib" "$root/usr/lib/kintsugi-server/$(basename "$lib")"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/lib/kintsugi-server/$(basename "$lib")"
done
ln -s ../lib/kintsugi-server/kintsugi-server "$root/usr/bin/kintsugi-server"
install_file 0644 "$here/packaging/systemd/kintsugi-server.service" "$root/lib/systemd/system/kintsugi-server.service"
sed -i -n '/^\[Unit\]/,$p' "$root/lib/systemd/system/kintsugi-server.service"
install_file 0644 "$here/packaging/etc/server.conf" "$root/etc/kintsugi/server.conf"
mkdir -p "$root/usr/share/man/man8"
{
  echo ".TH KINTSUGI-SERVER 8 \"$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)\" \"kintsugi-server $upstream\" \"Kintsugi manual\""
  echo ".SH NAME"
  echo "kintsugi-server \\- the self-hosted Kintsugi patch server"
  echo ".SH SYNOPSIS"
  echo ".B kintsugi-server run"
  echo "[\\fIOPTIONS\\fR]"
  echo ".SH DESCRIPTION"
  echo "The service kintsugi-server.service runs it as the system user kintsugi-server with its data in"
  echo "/var/lib/kintsugi-server and its options in /etc/kintsugi/server.conf. The first start writes the"
  echo "initial admin token to /var/lib/kintsugi-server/initial-admin-token."
  echo ".SH OPTIONS"
  echo ".nf"
  "$server_out/kintsugi-server" run --help | roff_text
  echo ".fi"
  echo ".SH SEE ALSO"
  echo ".BR kintsugi-server (1)"
} > "$root/usr/share/man/man8/kintsugi-server.8"
gzip -9n "$root/usr/share/man/man8/kintsugi-server.8"
changelog kintsugi-server "$root"
for script in postinst prerm postrm; do install -m 0755 "$here/packaging/debian/kintsugi-server/$script" "$root/DEBIAN/$script"; done
control_file kintsugi-server "$root" "libc6 (>= 2.34), libgcc-s1, libstdc++6, libssl3 | libssl3t64, adduser, gpg, gpg-agent" \
  "self-hosted patch server for Kintsugi kernel livepatches" \
  "The Kintsugi patch server keeps signed livepatch releases and delivers" \
  "them to Kintsugi agents: channels with delayed and health-gated" \
  "promotion, fleet-wide revoke, roles and API tokens, a hash-chained audit" \
  "log, CVE exposure, compliance and OpenVEX reports, Prometheus metrics and" \
  "a dashboard. It stores its data in SQLite by default, or PostgreSQL." \
  "" \
  "This package is self-contained: it needs no .NET runtime."
finish kintsugi-server "$root"
