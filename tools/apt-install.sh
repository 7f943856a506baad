#!/bin/sh
# Install Debian packages when apt-get is usable (root or password-less sudo); otherwise say so and fail.
# Usage: sh tools/apt-install.sh PACKAGE...
missing=""
for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ -z "$missing" ] && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "note: no apt-get here; cannot install$missing" >&2; exit 1; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
echo "installing Debian packages:$missing"
$SUDO apt-get install -y -q $missing >/dev/null 2>&1 && exit 0
$SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q $missing >/dev/null 2>&1 && exit 0
echo "note: could not install$missing with apt-get" >&2
exit 1
