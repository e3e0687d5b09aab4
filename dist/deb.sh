#!/usr/bin/env bash
# Builds a Debian package of peergate from this checkout with dpkg-deb (no other packaging tool):
#   /usr/bin/peergate                        the binary (static, CGO_ENABLED=0)
#   /lib/systemd/system/peergate.service     serve as a long-running front-end (Type=notify,
#                                            SIGHUP reloads, SIGTERM drains)
#   /usr/share/man/man1/peergate*.1.gz       man pages made by "peergate help -man"
#   /etc/peergate/serve.yaml                 an example serve file (a conffile: upgrades keep edits)
#   /usr/share/doc/peergate/                 README, copyright, examples
# Usage: dist/deb.sh [OUTDIR]   (default dist/out); prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist/out}
arch=$(dpkg --print-architecture 2>/dev/null || go env GOARCH)
# A Debian version from the last tag, else 0.0.0 with the commit date and hash.
if tag=$(git describe --tags --abbrev=0 2>/dev/null); then
  version=${tag#v}
else
  version="0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S).$(git rev-parse --short=12 HEAD)"
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/man/man1" \
  "$root/etc/peergate" "$root/usr/share/doc/peergate/examples"
CGO_ENABLED=0 go build -trimpath -buildvcs=true -o "$root/usr/bin/peergate" ./cmd/peergate
"$root/usr/bin/peergate" help -man "$root/usr/share/man/man1"
gzip -9n "$root"/usr/share/man/man1/*.1
install -m 0644 dist/peergate.service "$root/lib/systemd/system/peergate.service"
install -m 0644 dist/serve.yaml "$root/etc/peergate/serve.yaml"
install -m 0644 README.md "$root/usr/share/doc/peergate/README.md"
install -m 0644 LICENSE "$root/usr/share/doc/peergate/copyright"
cp -r examples/systemd examples/inetd examples/quickstart "$root/usr/share/doc/peergate/examples/"
chmod -R u=rwX,go=rX "$root/usr" "$root/etc" "$root/lib"
echo /etc/peergate/serve.yaml >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/control" <<CONTROL
Package: peergate
Version: $version
Architecture: $arch
Maintainer: peergate maintainers <maintainers@users.noreply.github.com>
Section: net
Priority: optional
Homepage: https://github.com/peergate/peergate
Installed-Size: $(du -sk "$root" | cut -f1)
Description: address access-control gate for TCP services
 peergate judges each TCP client by the address the kernel reports for the
 connected socket (getpeername) against a CIDR allow/deny list, and closes the
 connection or hands it on: as a proxy or inetd-style front-end (serve), as
 tcpd for inetd, xinetd and systemd socket activation (wrap), with check and
 lint for the rules.
CONTROL
mkdir -p "$out"
deb="$out/peergate_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
