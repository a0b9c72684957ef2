#!/usr/bin/env bash
# Builds the Debian package of Rotor with dpkg-deb (Debian's own tool, nothing to install):
# the stripped binary in /usr/bin, the systemd unit, the sysusers file, the environment file
# (a conffile) and the docs. Installing it creates the `rotor` user and group, writes
# /etc/rotor/config.json with fresh secrets (mode 0640, group rotor) unless one exists, and
# enables and starts the service where systemd runs.
#
#   bash scripts/build-deb.sh            # release build -> target/debian/rotor_<version>_<arch>.deb
#   bash scripts/build-deb.sh --debug    # from the debug build (CI's install check)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
if [ "${1:-}" = "--debug" ]; then
  profile=debug
fi
target_dir="${CARGO_TARGET_DIR:-target}"
if [ "$profile" = release ]; then
  cargo build --release -p rotor
else
  cargo build -p rotor
fi

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$target_dir/$profile/rotor" "$stage/usr/bin/rotor"
# The release profile keeps debug info for profiling; the package ships without it.
strip --strip-debug "$stage/usr/bin/rotor"
install -d "$stage/lib/systemd/system"
sed 's|/usr/local/bin/rotor|/usr/bin/rotor|g' systemd/rotor.service \
  > "$stage/lib/systemd/system/rotor.service"
install -D -m 0644 systemd/rotor.sysusers "$stage/usr/lib/sysusers.d/rotor.conf"
install -D -m 0644 systemd/rotor.env "$stage/etc/rotor/rotor.env"
install -D -m 0644 README.md "$stage/usr/share/doc/rotor/README.md"
install -D -m 0644 tuning.md "$stage/usr/share/doc/rotor/tuning.md"
install -D -m 0644 systemd/config.example.json "$stage/usr/share/doc/rotor/config.example.json"

install -d "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<EOF
Package: rotor
Version: $version
Architecture: $arch
Maintainer: Rotor developers <rotor@localhost>
Depends: libc6, adduser
Section: net
Priority: optional
Installed-Size: $(du -sk "$stage" | cut -f1)
Description: Centrifugo-compatible real-time messaging server
 Thread-per-core WebSocket, SSE and HTTP-streaming server speaking Centrifugo's
 client protocol and HTTP API, with Redis or NATS between nodes.
EOF
echo "/etc/rotor/rotor.env" > "$stage/DEBIAN/conffiles"

cat > "$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers /usr/lib/sysusers.d/rotor.conf
  elif ! getent passwd rotor >/dev/null; then
    adduser --system --group --home /var/lib/rotor --no-create-home rotor
  fi
  install -d -m 0750 -o root -g rotor /etc/rotor
  if [ ! -e /etc/rotor/config.json ]; then
    /usr/bin/rotor genconfig -c /etc/rotor/config.json --group rotor
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable rotor.service >/dev/null
    systemctl restart rotor.service
  fi
fi
exit 0
EOF
cat > "$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl disable --now rotor.service >/dev/null 2>&1 || true
fi
exit 0
EOF
cat > "$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -f /etc/rotor/config.json
  rmdir /etc/rotor 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
EOF
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

mkdir -p "$target_dir/debian"
out="$target_dir/debian/rotor_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$out" >/dev/null
echo "$out"
