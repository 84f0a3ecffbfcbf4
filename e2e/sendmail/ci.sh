#!/usr/bin/env bash
# Prepares the private Sendmail that the Sendmail end-to-end suite
# (e2e/sendmail) runs, without installing Sendmail: Debian's sendmail-bin
# conflicts with postfix (both are "the" MTA), and Postfix must stay
# installed for the rest of the tests. So the packages are only downloaded
# (apt-get download) and unpacked (dpkg-deb -x) into a folder of their own;
# nothing is configured, no maintainer script runs, no service starts, and
# the system's Postfix is left alone.
#
#   e2e/sendmail/ci.sh            # as root, before `make test`
#
# The folder is $SMSMILTER_SENDMAIL_ROOT, by default
# /var/cache/smsmilter-e2e/sendmail; the suite reads the same variable.
# Running the script again is cheap: it does nothing while the unpacked
# version is the one apt would download.
set -euo pipefail

dest=${SMSMILTER_SENDMAIL_ROOT:-/var/cache/smsmilter-e2e/sendmail}
# sendmail-bin: the sendmail binary and makemap; sendmail-cf: the m4
# macros sendmail.cf is generated from; sendmail-base: Debian's
# sendmail.mc and helpers (read for reference only); m4 to run the macros.
pkgs=(sendmail-bin sendmail-cf sendmail-base m4)

if [ "$(id -u)" != 0 ]; then
  echo "ci.sh: run as root (apt-get download, and the suite runs Sendmail as root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

candidate() { apt-cache policy sendmail-bin 2>/dev/null | awk '/Candidate:/ {print $2}'; }
want=$(candidate)
if [ -z "$want" ] || [ "$want" = "(none)" ]; then
  apt-get update -qq
  want=$(candidate)
fi
if [ -z "$want" ] || [ "$want" = "(none)" ]; then
  echo "ci.sh: apt knows no sendmail-bin package" >&2
  exit 1
fi
if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$want" ]; then
  echo "Sendmail $want already unpacked in $dest"
  exit 0
fi

# The shared libraries sendmail links against are ordinary packages that
# do not conflict with Postfix (most are installed with it already).
libs=$(apt-cache depends sendmail-bin | awk '$1 == "Depends:" && $2 ~ /^lib/ {print $2}' | sort -u)
missing=()
for l in $libs; do dpkg -s "$l" >/dev/null 2>&1 || missing+=("$l"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d)
new="$dest.new.$$"
trap 'rm -rf "$work" "$new"' EXIT
# apt's download sandbox user (_apt) must be able to write the folder.
chmod 755 "$work"
chown _apt "$work" 2>/dev/null || true
(cd "$work" && apt-get download -qq "${pkgs[@]}" >/dev/null) ||
  { apt-get update -qq && (cd "$work" && apt-get download -qq "${pkgs[@]}" >/dev/null); }

mkdir -p "$new"
for f in "$work"/*.deb; do dpkg-deb -x "$f" "$new"; done

bin="$new/usr/libexec/sendmail/sendmail"
for f in "$bin" "$new/usr/libexec/sendmail/makemap" "$new/usr/bin/m4" "$new/usr/share/sendmail/cf/m4/cf.m4"; do
  [ -e "$f" ] || { echo "ci.sh: $f missing from the unpacked packages" >&2; exit 1; }
done
if ldd "$bin" | grep -q 'not found'; then
  echo "ci.sh: sendmail lacks shared libraries:" >&2
  ldd "$bin" | grep 'not found' >&2
  exit 1
fi
# (Running it to ask, sendmail -d0.1, would first wait a minute trying to
# resolve this host's name: look for the milter option's name instead.)
grep -qa InputMailFilters "$bin" ||
  { echo "ci.sh: this sendmail was built without MILTER" >&2; exit 1; }

# The folder holds programs run as root: only root may change it.
chmod 755 "$new"
echo "$want" >"$new/.complete"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$new" "$dest"
echo "Sendmail $want unpacked in $dest"
