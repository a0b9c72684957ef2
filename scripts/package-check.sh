#!/usr/bin/env bash
# CI's install check (root on a fresh Debian machine): builds the package from the debug build,
# installs it with dpkg -i, and checks what a new operator relies on: the service user exists,
# the generated config is readable by it (and by no one else), `rotor checkconfig` passes as
# that user, the unit verifies, and the binary is stripped. Removes the package (purge) at
# the end, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "package-check: needs root (it installs a package); skipped"
  exit 0
fi

deb="$(bash scripts/build-deb.sh --debug | tail -1)"
trap 'dpkg --purge rotor >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb"

fail() { echo "package-check: $*" >&2; exit 1; }

getent passwd rotor >/dev/null || fail "no rotor user"
getent group rotor >/dev/null || fail "no rotor group"
[ "$(stat -c '%a %U %G' /etc/rotor/config.json)" = "640 root rotor" ] ||
  fail "config.json is $(stat -c '%a %U %G' /etc/rotor/config.json), want 640 root rotor"
runuser -u rotor -- /usr/bin/rotor checkconfig -c /etc/rotor/config.json ||
  fail "checkconfig fails as the service user"
if runuser -u nobody -- cat /etc/rotor/config.json >/dev/null 2>&1; then
  fail "config.json (secrets) is readable by other users"
fi
readelf -S /usr/bin/rotor | grep -q "\.debug_info" && fail "the binary has debug info"
[ -f /usr/share/doc/rotor/README.md ] || fail "no README where the unit's Documentation= points"
grep -q '^ExecStart=/usr/bin/rotor ' /lib/systemd/system/rotor.service || fail "unit ExecStart"
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify /lib/systemd/system/rotor.service
fi
# A reinstall keeps the operator's config (secrets are not regenerated).
before="$(sha256sum /etc/rotor/config.json)"
dpkg -i "$deb"
[ "$(sha256sum /etc/rotor/config.json)" = "$before" ] || fail "reinstall replaced config.json"
echo "package-check: ok ($deb)"
