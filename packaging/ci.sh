#!/usr/bin/env bash
# packaging/ci.sh: builds the .deb and .rpm and tests them on this machine
# (run by .ci/run as root on a fresh Debian 12; takes a minute or two with
# a warm Go build cache).
#
# - builds both packages twice and checks they are byte-identical;
# - inspects the .rpm (file list, %config(noreplace), owners, scripts);
# - installs the .deb: files, conffile, user and group (in dialout),
#   check-config on the installed config, systemd-analyze verify, man page,
#   and a short run of the daemon as user smsmilter with that config;
# - upgrades to a newer build whose default config changed: the admin's
#   edited config stays, the new default lands as .dpkg-dist;
# - the post-install start rule, with systemctl replaced by a recorder while
#   a running systemd is simulated (only where no systemd runs): an
#   untouched default is not started, an edited one is, an upgrade restarts
#   only a running service and only if the new version accepts the config;
# - purges, and checks that files, user, group and state are gone;
# - boots this machine's own OS in a throwaway container (systemd-nspawn on
#   an overlay of /, private network) and runs the unit under a real
#   systemd: install, start with the hardening, /healthz, reload, crash
#   restart, unix socket, bad config, upgrade, stop, purge. Skipped (said
#   so) where containers cannot be booted.
#
# The machine is left as it was: the package is purged at the end, also on
# failure. It refuses to run where smsmilter is installed or its user,
# config or state already exist.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
export PATH=$PATH:/usr/sbin:/sbin
began=$(date +%s)

fail() { echo "packaging/ci.sh: FAIL: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; }
step() { printf '\n--- %s (%ss)\n' "$*" "$(($(date +%s) - began))"; }

# pkg_state: dpkg's state of smsmilter (installed, config-files, ...), or
# not-installed.
pkg_state() {
	local s
	s=$(dpkg-query -W -f='${db:Status-Status}' smsmilter 2>/dev/null) || s=
	echo "${s:-not-installed}"
}

# --- preconditions -------------------------------------------------------
[ "$(id -u)" -eq 0 ] || fail "run as root (it installs and purges the package)"
command -v dpkg >/dev/null || fail "needs a Debian system (dpkg)"
[ "$(pkg_state)" = not-installed ] || fail "smsmilter is $(pkg_state) on this machine; refusing to touch it"
for what in "getent passwd smsmilter" "getent group smsmilter"; do
	if $what >/dev/null; then fail "'$what' exists already; refusing to run (purge would remove it)"; fi
done
for p in /etc/smsmilter /var/lib/smsmilter /usr/bin/smsmilter; do
	[ ! -e "$p" ] || fail "$p exists already; refusing to run (purge would remove it)"
done

need=()
command -v rpm >/dev/null || need+=(rpm)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
	step "apt-get install ${need[*]}"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/smsmilter-pkgci.XXXXXX)
chmod 755 "$work"
sim_dir_made=
daemon_pid=
ovl_mounted=
# systemd-analyze verify leaves this empty marker behind.
units_load_marker=
[ -e /run/systemd/systemd-units-load ] || units_load_marker=/run/systemd/systemd-units-load
nspawn_dir_made=
[ -e /run/systemd/nspawn ] || nspawn_dir_made=1

cleanup() {
	rc=$?
	set +e
	if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null; fi
	if [ "$(pkg_state)" != not-installed ]; then
		echo "cleanup: purging smsmilter"
		dpkg --purge smsmilter >/dev/null 2>&1 || dpkg --purge --force-all smsmilter >/dev/null 2>&1
	fi
	# Whatever a failed purge left (all of it absent before the run).
	getent passwd smsmilter >/dev/null && userdel smsmilter
	getent group smsmilter >/dev/null && groupdel smsmilter
	rm -rf /etc/smsmilter /var/lib/smsmilter /run/smsmilter
	rm -f /etc/systemd/system/multi-user.target.wants/smsmilter.service \
		/etc/systemd/system/smsmilter.service \
		/var/lib/systemd/deb-systemd-helper-enabled/smsmilter.service.dsh-also \
		/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/smsmilter.service \
		/var/lib/systemd/deb-systemd-helper-masked/smsmilter.service
	if [ -n "$sim_dir_made" ]; then rmdir /run/systemd/system; fi
	if [ -n "$ovl_mounted" ]; then
		umount "$work/ovl/root" 2>/dev/null || umount -l "$work/ovl/root"
		umount "$work/ovl" 2>/dev/null || umount -l "$work/ovl"
	fi
	[ -z "$units_load_marker" ] || rm -f "$units_load_marker"
	[ -z "$nspawn_dir_made" ] || rm -rf /run/systemd/nspawn
	rm -rf "$work"
	if [ $rc -eq 0 ]; then
		echo "packaging/ci.sh: all checks passed in $(($(date +%s) - began))s"
	else
		echo "packaging/ci.sh: FAILED (exit $rc) after $(($(date +%s) - began))s" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ---------------------------------------------------------------
# From a frozen copy of the checkout (with .git, for the version), and again
# from a second copy in another directory: the two must be byte-identical.
step "copy the checkout, build the packages there (make package)"
src1=$work/src1 src2=$work/src2
mkdir -p "$src1"
rc=0
tar -C . --exclude=./dist --exclude=./bin --exclude=./.git/index.lock --warning=no-file-changed -cf - . |
	tar -C "$src1" -xf - || rc=$?
[ $rc -le 1 ] || fail "could not copy the checkout"
cp -a "$src1" "$src2"
DIST=$work/v1 make -s -C "$src1" package | tee "$work/build1.log"
deb1=$(ls "$work"/v1/smsmilter_*_amd64.deb)
rpm1=$(ls "$work"/v1/smsmilter-*.x86_64.rpm)
v1=$(dpkg-deb -f "$deb1" Version)
[ "$(basename "$deb1")" = "smsmilter_${v1}_amd64.deb" ] || fail "deb file name $(basename "$deb1") does not carry version $v1"
[ "$(basename "$rpm1")" = "smsmilter-${v1}.x86_64.rpm" ] || fail "rpm file name $(basename "$rpm1") does not carry version $v1"
ok "built $(basename "$deb1") and $(basename "$rpm1")"

step "reproducible: build again from the other copy and compare"
DIST=$work/v1b "$src2/packaging/build.sh" >/dev/null
if ! cmp -s "$deb1" "$work/v1b/$(basename "$deb1")"; then
	mkdir -p "$work/r1" "$work/r2"
	dpkg-deb -R "$deb1" "$work/r1"
	dpkg-deb -R "$work/v1b/$(basename "$deb1")" "$work/r2"
	diff -r "$work/r1" "$work/r2" || true
	fail "two builds of the .deb differ (above): the build is not reproducible"
fi
cmp -s "$rpm1" "$work/v1b/$(basename "$rpm1")" || fail "two builds of the .rpm differ"
ok "byte-identical .deb and .rpm"

step "build a newer version whose default config changed"
v2="$v1.ci2"
cp "$src1/packaging/smsmilter.yaml" "$work/default2.yaml"
printf '\n# (packaging/ci.sh: the default config of the newer version)\n' >>"$work/default2.yaml"
VERSION=$v2 PKG_CONFIG=$work/default2.yaml DIST=$work/v2 "$src1/packaging/build.sh" >/dev/null
deb2=$work/v2/smsmilter_${v2}_amd64.deb
[ -f "$deb2" ] || fail "no $deb2"
dpkg --compare-versions "$v2" gt "$v1" || fail "dpkg does not order $v2 after $v1"
[ "$(rpm --eval "%{lua: print(rpm.vercmp('$v2', '$v1'))}")" = 1 ] || fail "rpm does not order $v2 after $v1"
ok "$v2 > $v1 for dpkg and rpm"

# --- the binary ----------------------------------------------------------
step "the binary"
mkdir "$work/x"
dpkg-deb -x "$deb1" "$work/x"
bin=$work/x/usr/bin/smsmilter
[ "$("$bin" --version)" = "smsmilter $v1" ] || fail "--version says '$("$bin" --version)', expected 'smsmilter $v1'"
ok "--version: smsmilter $v1"
if ldd "$bin" >/dev/null 2>&1; then fail "/usr/bin/smsmilter is dynamically linked: $(ldd "$bin" 2>&1 | head -3)"; fi
ok "statically linked"
go version -m "$bin" | grep -q 'CGO_ENABLED=0' || fail "not built with CGO_ENABLED=0"
go version -m "$bin" | grep -q -- '-trimpath=true' || fail "not built with -trimpath"
ok "CGO_ENABLED=0, -trimpath"

expected_files="/etc/smsmilter/smsmilter.yaml
/usr/bin/smsmilter
/usr/share/doc/smsmilter/README.Postfix
/usr/share/doc/smsmilter/changelog.gz
/usr/share/doc/smsmilter/copyright
/usr/share/man/man8/smsmilter.8.gz
/usr/share/smsmilter/smsmilter.yaml"

# --- rpm -----------------------------------------------------------------
step "inspect the .rpm"
rpm -qlp "$rpm1" >"$work/rpm.list" 2>"$work/rpm.err" || { cat "$work/rpm.err"; fail "rpm -qlp failed"; }
for f in $expected_files /usr/lib/systemd/system/smsmilter.service /etc/smsmilter /usr/share/smsmilter; do
	grep -qx "$f" "$work/rpm.list" || fail ".rpm lacks $f"
done
ok "file list: $(wc -l <"$work/rpm.list") entries, all expected ones present"
[ "$(rpm -qp --configfiles "$rpm1")" = /etc/smsmilter/smsmilter.yaml ] || fail "rpm config files: $(rpm -qp --configfiles "$rpm1")"
flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME}\n]' "$rpm1" | grep '^/etc/smsmilter/smsmilter.yaml ')
[ "$flags" = "/etc/smsmilter/smsmilter.yaml cn -rw-r----- root:smsmilter" ] || fail "config in the .rpm: '$flags', expected %config(noreplace) -rw-r----- root:smsmilter"
ok "%config(noreplace) /etc/smsmilter/smsmilter.yaml, 0640 root:smsmilter"
[ "$(rpm -qp --qf '%{VERSION}' "$rpm1")" = "$v1" ] || fail "rpm Version is not $v1"
rpm -qp --scripts "$rpm1" >"$work/rpm.scripts"
for want in 'preinstall scriptlet' 'postinstall scriptlet' 'preuninstall scriptlet' 'postuninstall scriptlet' \
	'useradd -r' 'groupadd -r' 'dialout' 'check-config' 'daemon-reload' 'disable --now'; do
	grep -q -- "$want" "$work/rpm.scripts" || fail "rpm scripts lack '$want'"
done
for s in "$src1"/packaging/scripts/rpm/*.sh; do sh -n "$s" || fail "$s: syntax error"; done
ok "scripts: %pre creates the user (useradd -r, dialout), %post checks the config, %preun disables"

# --- simulated systemd -----------------------------------------------------
# With no systemd running, the maintainer scripts must only enable the unit.
# Where none runs, a running one is simulated to test the start rule: the
# directory systemd's presence is detected by, and a systemctl on PATH that
# records start/stop/restart and keeps an "active" flag (unit-file
# operations go to the real systemctl, offline).
sim=
if [ ! -e /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ]; then
	sim=1
	mkdir -p "$work/bin"
	cat >"$work/bin/systemctl" <<EOF
#!/bin/sh
echo "systemctl \$*" >>"$work/systemctl.log"
for a; do
	case \$a in
	is-active) [ "\$(cat "$work/active")" = active ]; exit ;;
	start|restart|try-restart|reload-or-restart) echo active >"$work/active"; exit 0 ;;
	stop) echo inactive >"$work/active"; exit 0 ;;
	daemon-reload) exit 0 ;;
	-*) ;;
	*) break ;;
	esac
done
SYSTEMD_OFFLINE=1 exec /usr/bin/systemctl "\$@"
EOF
	chmod 755 "$work/bin/systemctl"
	echo inactive >"$work/active"
	: >"$work/systemctl.log"
	export PATH=$work/bin:$PATH
	mkdir -p /run/systemd/system
	sim_dir_made=1
fi
set_active() { [ -z "$sim" ] || echo "$1" >"$work/active"; }
sim_log_reset() { [ -z "$sim" ] || : >"$work/systemctl.log"; }
sim_expect() { # sim_expect start|restart|none WHY
	[ -n "$sim" ] || return 0
	local got
	got=$(grep -Eo '^systemctl (start|restart|stop) smsmilter.service' "$work/systemctl.log" | awk '{print $2}' | tr '\n' ' ' || true)
	got=${got% }
	[ "${got:-none}" = "$1" ] || fail "$2: expected systemctl ${1}, the scripts ran: ${got:-nothing}"
	ok "$2: systemctl ${1/none/start\/restart not run}"
}

# --- install -------------------------------------------------------------
step "dpkg -i $(basename "$deb1")"
dpkg -i "$deb1" 2>&1 | tee "$work/install1.log"
[ "$(dpkg-query -W -f='${Status} ${Version}' smsmilter)" = "install ok installed $v1" ] || fail "not installed: $(dpkg-query -W -f='${Status} ${Version}' smsmilter)"
ok "installed $v1"

dpkg -L smsmilter >"$work/deb.list"
for f in $expected_files /lib/systemd/system/smsmilter.service; do
	grep -qx "$f" "$work/deb.list" || fail "dpkg -L lacks $f"
	[ -e "$f" ] || fail "$f is not on disk"
done
ok "dpkg -L: every expected file, all on disk"

conffiles=$(dpkg-query -W -f='${Conffiles}' smsmilter)
echo "$conffiles" | grep -q '^ /etc/smsmilter/smsmilter.yaml [0-9a-f]\{32\}$' || fail "not a conffile: '$conffiles'"
[ "$(echo "$conffiles" | grep -c .)" = 1 ] || fail "unexpected conffiles: $conffiles"
ok "conffile: /etc/smsmilter/smsmilter.yaml"
[ "$(stat -c '%U:%G %a' /etc/smsmilter/smsmilter.yaml)" = "root:smsmilter 640" ] || fail "config is $(stat -c '%U:%G %a' /etc/smsmilter/smsmilter.yaml)"
ok "config root:smsmilter 0640"

getent passwd smsmilter >/dev/null || fail "no user smsmilter"
getent group smsmilter >/dev/null || fail "no group smsmilter"
[ "$(id -gn smsmilter)" = smsmilter ] || fail "primary group of smsmilter is $(id -gn smsmilter)"
id -nG smsmilter | tr ' ' '\n' | grep -qx dialout || fail "smsmilter is not in dialout: $(id -nG smsmilter)"
uid=$(id -u smsmilter)
[ "$uid" -lt 1000 ] || fail "smsmilter is not a system user (uid $uid)"
IFS=: read -r _ _ _ _ _ home shell < <(getent passwd smsmilter)
[ "$home" = /var/lib/smsmilter ] || fail "home of smsmilter is $home"
case $shell in */nologin|/bin/false) ;; *) fail "smsmilter has a login shell: $shell" ;; esac
ok "system user smsmilter (uid $uid, groups: $(id -nG smsmilter)), home $home, shell $shell"
[ "$(stat -c '%U:%G %a' /var/lib/smsmilter)" = "smsmilter:smsmilter 750" ] || fail "/var/lib/smsmilter is $(stat -c '%U:%G %a' /var/lib/smsmilter)"
ok "/var/lib/smsmilter smsmilter:smsmilter 0750"

/usr/bin/smsmilter check-config --config /etc/smsmilter/smsmilter.yaml || fail "check-config refuses the installed config"
runuser -u smsmilter -- /usr/bin/smsmilter check-config --config /etc/smsmilter/smsmilter.yaml >/dev/null ||
	fail "check-config as user smsmilter refuses the installed config"
ok "check-config exits 0 on the installed config (as root and as smsmilter)"
cmp -s /etc/smsmilter/smsmilter.yaml /usr/share/smsmilter/smsmilter.yaml || fail "/usr/share/smsmilter/smsmilter.yaml differs from the installed default"

step "systemd unit"
man_opt=--man=no
if command -v man >/dev/null; then man_opt=--man=yes; fi
if ! systemd-analyze verify $man_opt /lib/systemd/system/smsmilter.service >"$work/verify.log" 2>&1; then
	cat "$work/verify.log"
	fail "systemd-analyze verify refuses the unit"
fi
# Unknown keys and bad values are only warnings: none may mention the unit.
if grep -i 'smsmilter' "$work/verify.log"; then fail "systemd-analyze verify warns about the unit (above)"; fi
ok "systemd-analyze verify $man_opt: no complaints"
u=/lib/systemd/system/smsmilter.service
# shellcheck disable=SC2016 # a literal $MAINPID below
for want in User=smsmilter Group=smsmilter SupplementaryGroups=dialout StateDirectory=smsmilter \
	RuntimeDirectory=smsmilter RuntimeDirectoryMode=0750 ProtectSystem=strict ProtectHome=yes \
	PrivateTmp=yes NoNewPrivileges=yes RestartPreventExitStatus=2 Restart=on-failure TimeoutStopSec=40s \
	'ExecStartPre=/usr/bin/smsmilter check-config --config /etc/smsmilter/smsmilter.yaml' \
	'ExecStart=/usr/bin/smsmilter serve --config /etc/smsmilter/smsmilter.yaml' \
	'ExecReload=/bin/kill -HUP $MAINPID' WantedBy=multi-user.target; do
	grep -qxF -- "$want" "$u" || fail "the unit lacks $want"
done
ok "the unit has its user, groups, directories, hardening and restart policy"
[ -L /etc/systemd/system/multi-user.target.wants/smsmilter.service ] || fail "the unit is not enabled"
ok "enabled (multi-user.target.wants)"
sim_expect none "fresh install with the untouched default config"
grep -q 'not started: /etc/smsmilter/smsmilter.yaml is the packaged default' "$work/install1.log" ||
	{ [ -z "$sim" ] || fail "postinst did not say why the service was not started"; }

step "man page and docs"
zcat /usr/share/man/man8/smsmilter.8.gz | head -5 | grep -q '^\.TH SMSMILTER 8 .*smsmilter '"$v1" || fail "man page .TH line lacks the version"
if command -v man >/dev/null; then
	MANWIDTH=80 man --warnings -l /usr/share/man/man8/smsmilter.8.gz >"$work/man.txt" 2>"$work/man.err" || fail "man -l failed: $(cat "$work/man.err")"
	[ ! -s "$work/man.err" ] || { cat "$work/man.err"; fail "groff warnings in the man page"; }
	man -w smsmilter >/dev/null 2>&1 || fail "man smsmilter does not find the page"
else
	zcat /usr/share/man/man8/smsmilter.8.gz | sed 's/\\-/-/g; s/\\f[BIRP]//g' >"$work/man.txt"
fi
for want in 'serve' 'check-config' 'user add' 'domain add' 'domain verify' 'address add' 'address import' \
	'ip add' 'mailbox passwd' 'list' 'log' 'queue' 'explain' 'plugin NAME' \
	'SIGNALS' 'SIGHUP' 'SIGTERM' 'EXIT STATUS' 'FILES' 'POSTFIX' 'smtpd_milters' 'milter_default_action' \
	'/etc/smsmilter/smsmilter.yaml' '/var/lib/smsmilter'; do
	grep -q -- "$want" "$work/man.txt" || fail "the man page does not mention '$want'"
done
ok "man -l renders without warnings and covers every command, signals, exit codes, files, Postfix"
zcat /usr/share/doc/smsmilter/changelog.gz | head -1 | grep -qF "smsmilter ($v1)" || fail "changelog.gz does not start with $v1"
grep -q 'smtpd_milters = inet:127.0.0.1:8890' /usr/share/doc/smsmilter/README.Postfix || fail "README.Postfix lacks smtpd_milters"
grep -q '==> gopkg.in/yaml.v3' /usr/share/doc/smsmilter/copyright || fail "copyright lacks the module licenses"
ok "README.Postfix, changelog.gz, copyright"

step "run the daemon briefly as smsmilter with the installed config"
setpriv --reuid=smsmilter --regid=smsmilter --init-groups -- /usr/bin/smsmilter serve --config /etc/smsmilter/smsmilter.yaml >"$work/serve.log" 2>&1 &
daemon_pid=$!
healthy=
for _ in $(seq 1 60); do
	if ! kill -0 "$daemon_pid" 2>/dev/null; then break; fi
	if curl -fsS -o /dev/null http://127.0.0.1:8891/healthz 2>/dev/null; then healthy=1; break; fi
	sleep 0.5
done
if [ -z "$healthy" ]; then
	cat "$work/serve.log"
	fail "the daemon did not answer /healthz with 200 within 30s"
fi
(exec 3<>/dev/tcp/127.0.0.1/8890) 2>/dev/null || fail "nothing listens on the milter port 127.0.0.1:8890"
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=
[ $rc -eq 0 ] || { cat "$work/serve.log"; fail "serve exited $rc on SIGTERM"; }
if find /var/lib/smsmilter ! -user smsmilter | grep -q .; then fail "files in /var/lib/smsmilter not owned by smsmilter: $(find /var/lib/smsmilter ! -user smsmilter)"; fi
ok "/healthz 200, milter port open, exit 0 on SIGTERM; state files owned by smsmilter"

# --- upgrade ---------------------------------------------------------------
step "upgrade to $v2 with an edited config and a running service"
sed -i 's/^sms_domains: \[sms.example.com\]$/sms_domains: [sms.ci.example.org]/' /etc/smsmilter/smsmilter.yaml
grep -q 'sms.ci.example.org' /etc/smsmilter/smsmilter.yaml || fail "could not edit the config"
/usr/bin/smsmilter check-config --config /etc/smsmilter/smsmilter.yaml >/dev/null || fail "the edited config is refused"
edited=$(sha256sum </etc/smsmilter/smsmilter.yaml)
set_active active
sim_log_reset
dpkg --force-confold -i "$deb2" 2>&1 | tee "$work/install2.log"
[ "$(dpkg-query -W -f='${Status} ${Version}' smsmilter)" = "install ok installed $v2" ] || fail "not upgraded to $v2"
[ "$(/usr/bin/smsmilter --version)" = "smsmilter $v2" ] || fail "/usr/bin/smsmilter is not $v2"
[ "$(sha256sum </etc/smsmilter/smsmilter.yaml)" = "$edited" ] || fail "the upgrade changed the edited config"
ok "the edited config is kept"
[ -f /etc/smsmilter/smsmilter.yaml.dpkg-dist ] || fail "no /etc/smsmilter/smsmilter.yaml.dpkg-dist"
cmp -s /etc/smsmilter/smsmilter.yaml.dpkg-dist "$work/default2.yaml" || fail ".dpkg-dist is not the new default"
cmp -s /usr/share/smsmilter/smsmilter.yaml "$work/default2.yaml" || fail "/usr/share/smsmilter/smsmilter.yaml is not the new default"
ok "the new default is smsmilter.yaml.dpkg-dist (and /usr/share/smsmilter/smsmilter.yaml)"
dpkg-query -W -f='${Conffiles}' smsmilter | grep -q '^ /etc/smsmilter/smsmilter.yaml ' || fail "no longer a conffile after the upgrade"
sim_expect restart "upgrade of a running service, config accepted"

step "reinstall with a config the new version refuses, service running"
cp -p /etc/smsmilter/smsmilter.yaml "$work/good.yaml"
printf 'no_such_key: 1\n' >>/etc/smsmilter/smsmilter.yaml
if /usr/bin/smsmilter check-config --config /etc/smsmilter/smsmilter.yaml >/dev/null 2>&1; then fail "check-config accepts an unknown key"; fi
rc=0
/usr/bin/smsmilter check-config --config /etc/smsmilter/smsmilter.yaml >/dev/null 2>&1 || rc=$?
[ $rc -eq 2 ] || fail "check-config exits $rc on a bad config, expected 2"
ok "check-config exits 2 on a bad config"
set_active active
sim_log_reset
dpkg --force-confold -i "$deb2" >"$work/install3.log" 2>&1 || { cat "$work/install3.log"; fail "dpkg -i failed with a bad config"; }
sim_expect none "running service, config refused"
if [ -n "$sim" ]; then
	grep -q 'NOT restarted' "$work/install3.log" || { cat "$work/install3.log"; fail "postinst did not say it did not restart"; }
	ok "postinst says it did not restart, and why"
fi
cp -p "$work/good.yaml" /etc/smsmilter/smsmilter.yaml

step "reinstall with a good config, service stopped"
set_active inactive
sim_log_reset
dpkg --force-confold -i "$deb2" >"$work/install4.log" 2>&1 || { cat "$work/install4.log"; fail "dpkg -i failed"; }
sim_expect none "upgrade of a stopped service"

step "dpkg -r (remove, keep the config)"
set_active active
sim_log_reset
dpkg -r smsmilter >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "dpkg -r failed"; }
sim_expect stop "remove of a running service"
[ "$(pkg_state)" = config-files ] || fail "after dpkg -r the package is $(pkg_state), expected config-files"
[ ! -e /usr/bin/smsmilter ] || fail "/usr/bin/smsmilter is still there after dpkg -r"
[ "$(sha256sum </etc/smsmilter/smsmilter.yaml)" = "$edited" ] || fail "dpkg -r changed the config"
getent passwd smsmilter >/dev/null || fail "dpkg -r removed the user (only purge may)"
[ -d /var/lib/smsmilter ] || fail "dpkg -r removed /var/lib/smsmilter (only purge may)"
ok "binary gone; config, user and state kept"

# --- purge -----------------------------------------------------------------
check_purged() {
	[ "$(pkg_state)" = not-installed ] || fail "still known to dpkg after purge: $(pkg_state)"
	for p in /usr/bin/smsmilter /etc/smsmilter /var/lib/smsmilter /usr/share/smsmilter /usr/share/doc/smsmilter \
		/usr/share/man/man8/smsmilter.8.gz /lib/systemd/system/smsmilter.service \
		/etc/systemd/system/multi-user.target.wants/smsmilter.service /etc/systemd/system/smsmilter.service; do
		if [ -e "$p" ] || [ -L "$p" ]; then fail "$p is still there after purge"; fi
	done
	for p in /var/lib/systemd/deb-systemd-helper-enabled/smsmilter.service.dsh-also \
		/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/smsmilter.service \
		/var/lib/systemd/deb-systemd-helper-masked/smsmilter.service; do
		if [ -e "$p" ] || [ -L "$p" ]; then fail "$p (deb-systemd-helper state) is still there after purge"; fi
	done
	if getent passwd smsmilter >/dev/null; then fail "user smsmilter is still there after purge"; fi
	if getent group smsmilter >/dev/null; then fail "group smsmilter is still there after purge"; fi
	if getent group dialout | grep -qw smsmilter; then fail "smsmilter is still in dialout after purge"; fi
	ok "package, files, config, state, unit links, user and group are gone"
}
step "dpkg --purge"
dpkg --purge smsmilter
check_purged

if [ -n "$sim" ]; then
	step "fresh install over an admin-provided config (simulated systemd)"
	mkdir -p /etc/smsmilter
	sed 's/^sms_domains: .*/sms_domains: [sms.ci.example.org]/' "$src1/packaging/smsmilter.yaml" >/etc/smsmilter/smsmilter.yaml
	chmod 0644 /etc/smsmilter/smsmilter.yaml
	set_active inactive
	sim_log_reset
	dpkg --force-confold -i "$deb1" >"$work/install5.log" 2>&1 || { cat "$work/install5.log"; fail "dpkg -i failed"; }
	grep -q sms.ci.example.org /etc/smsmilter/smsmilter.yaml || fail "dpkg replaced the admin-provided config"
	sim_expect start "fresh install with an edited, valid config"
	dpkg --purge smsmilter >/dev/null
	check_purged
fi

# --- under a real systemd ----------------------------------------------------
# The unit's hardening can only be proven by running it: boot this machine's
# OS (an overlay of /, so nothing is written to the host) in a container
# with a private network, and test there.
step "the unit under a real systemd (systemd-nspawn, throwaway overlay of /)"
nspawn_skip() { echo "  SKIPPED: $* (the tests above still count)"; }
nspawn_stage() {
	if ! command -v systemd-nspawn >/dev/null; then
		apt-get install -y -qq --no-install-recommends systemd-container >/dev/null 2>&1 ||
			{ nspawn_skip "systemd-nspawn is not installable"; return 0; }
	fi
	mkdir -p "$work/ovl"
	if ! mount -t tmpfs tmpfs "$work/ovl" 2>/dev/null; then nspawn_skip "cannot mount a tmpfs"; return 0; fi
	ovl_mounted=1
	mkdir -p "$work/ovl/up" "$work/ovl/work" "$work/ovl/root"
	if ! mount -t overlay overlay -o "lowerdir=/,upperdir=$work/ovl/up,workdir=$work/ovl/work" "$work/ovl/root" 2>/dev/null; then
		umount "$work/ovl"; ovl_mounted=
		nspawn_skip "cannot make an overlay of /"; return 0
	fi
	local n=$work/nsp
	mkdir -p "$n/out"
	cp "$deb1" "$n/v1.deb"
	cp "$deb2" "$n/v2.deb"
	cat >"$n/pkgtest.service" <<'EOF'
[Unit]
Description=smsmilter package test
[Service]
Type=oneshot
ExecStart=/bin/bash /nsp/test.sh
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=file:/nsp/out/test.log
StandardError=inherit
TimeoutStartSec=240s
EOF
	cat >"$n/test.sh" <<'EOF'
# Runs inside the container, as pkgtest.service. Results: /nsp/out/result.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
set -x
res=/nsp/out/result
echo BOOTED >"$res"
ok() { echo "ok: $*" >>"$res"; }
bad() { echo "FAIL: $*" >>"$res"; }
conf=/etc/smsmilter/smsmilter.yaml
prop() { systemctl show smsmilter -p "$1" --value; }
wait_for() { # wait_for SECONDS COMMAND...
	local t=$1; shift
	for _ in $(seq 1 $((t * 4))); do "$@" && return 0; sleep 0.25; done
	return 1
}
healthy() { curl -fsS -o /dev/null http://127.0.0.1:8891/healthz; }
state_is() { [ "$(prop ActiveState)" = "$1" ]; }
active_pid_not() { [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != 0 ] && [ "$(prop MainPID)" != "$1" ] && healthy; }

dpkg -i /nsp/v1.deb >/nsp/out/dpkg1.log 2>&1 || bad "dpkg -i v1"
[ "$(systemctl is-enabled smsmilter)" = enabled ] && ok "enabled after install" || bad "not enabled after install"
sleep 1
[ "$(prop ActiveState)" = inactive ] && ok "not started with the untouched default config" || bad "started with the untouched default config"

sed -i 's/^sms_domains: .*/sms_domains: [sms.nsp.example.org]/' "$conf"
if systemctl start smsmilter && wait_for 20 healthy; then ok "starts under the hardened unit; /healthz 200"; else bad "does not start: $(systemctl status smsmilter --no-pager 2>&1 | tail -5)"; fi
pid=$(prop MainPID)
st=/proc/$pid/status
grep -q '^NoNewPrivs:[[:space:]]*1' "$st" && ok "NoNewPrivs" || bad "NoNewPrivs not set"
grep -q '^Seccomp:[[:space:]]*2' "$st" && ok "seccomp filter" || bad "no seccomp filter"
grep -q '^CapEff:[[:space:]]*0000000000000400$' "$st" && ok "capabilities: CAP_NET_BIND_SERVICE only" || bad "capabilities: $(grep ^CapEff "$st")"
[ "$(stat -c %U /proc/$pid)" = smsmilter ] && ok "runs as smsmilter" || bad "runs as $(stat -c %U /proc/$pid)"
dialout=$(getent group dialout | cut -d: -f3)
grep -q "^Groups:.*\b$dialout\b" "$st" && ok "in group dialout" || bad "not in group dialout: $(grep ^Groups "$st")"
(exec 3<>/dev/tcp/127.0.0.1/8890) && ok "milter listens on 127.0.0.1:8890" || bad "no milter on 127.0.0.1:8890"
[ "$(systemd-cgls --no-pager -u smsmilter.service 2>/dev/null | grep -c 'smsmilter plugin outbox')" -ge 1 ] && ok "outbox plugin process runs" || bad "no outbox plugin process"
[ "$(stat -c '%U %a' /var/lib/smsmilter)" = "smsmilter 750" ] && ok "/var/lib/smsmilter smsmilter 0750" || bad "/var/lib/smsmilter: $(stat -c '%U %a' /var/lib/smsmilter)"
[ "$(stat -c '%U %a' /run/smsmilter)" = "smsmilter 750" ] && ok "/run/smsmilter smsmilter 0750" || bad "/run/smsmilter: $(stat -c '%U %a' /run/smsmilter 2>&1)"
[ -f /var/lib/smsmilter/outbox.jsonl ] && ok "outbox file written under /var/lib/smsmilter" || bad "no /var/lib/smsmilter/outbox.jsonl"

systemctl reload smsmilter
sleep 1
if [ "$(prop MainPID)" = "$pid" ] && [ "$(prop ActiveState)" = active ] && journalctl -u smsmilter --no-pager | grep -q 'config reloaded'; then ok "reload (SIGHUP) keeps the process and reloads"; else bad "reload: pid $(prop MainPID) state $(prop ActiveState)"; fi

kill -ABRT "$pid"   # what a Go panic becomes with GOTRACEBACK=crash
if wait_for 20 active_pid_not "$pid"; then ok "restarted after a crash (SIGABRT, as a panic with GOTRACEBACK=crash)"; else bad "not restarted after a crash: $(prop ActiveState) $(prop Result)"; fi

install -d -o smsmilter -g smsmilter -m 0750 /var/spool/postfix/smsmilter
sed -i 's|^  listen: inet:127.0.0.1:8890|  listen: unix:/var/spool/postfix/smsmilter/milter.sock|' "$conf"
systemctl restart smsmilter
if wait_for 20 test -S /var/spool/postfix/smsmilter/milter.sock && [ "$(stat -c '%U:%G %a' /var/spool/postfix/smsmilter/milter.sock)" = "smsmilter:smsmilter 660" ]; then
	ok "unix socket in Postfix's chroot, smsmilter:smsmilter 0660"
else
	bad "unix socket: $(ls -la /var/spool/postfix/smsmilter 2>&1)"
fi

cp "$conf" /nsp/out/good.yaml
echo 'bogus_key: 1' >>"$conf"
if systemctl restart smsmilter; then bad "restart with a bad config succeeded"; else ok "restart with a bad config fails"; fi
if wait_for 30 state_is failed; then ok "bad config: gives up ($(prop NRestarts) restarts, $(prop Result))"; else bad "bad config: still $(prop ActiveState) after 30s, $(prop NRestarts) restarts"; fi
journalctl -u smsmilter --no-pager | grep -q 'unknown key "bogus_key"' && ok "the journal names the problem" || bad "the journal does not show check-config's message"
cp /nsp/out/good.yaml "$conf"
systemctl reset-failed smsmilter
systemctl start smsmilter && wait_for 20 test -S /var/spool/postfix/smsmilter/milter.sock || bad "does not start again after the fix"

pid=$(prop MainPID)
dpkg --force-confold -i /nsp/v2.deb >/nsp/out/dpkg2.log 2>&1 || bad "dpkg -i v2"
if wait_for 20 active_pid_not "$pid"; then ok "upgrade restarts the running service"; else bad "upgrade did not restart: pid $(prop MainPID) state $(prop ActiveState)"; fi
cmp -s "$conf" /nsp/out/good.yaml && ok "upgrade keeps the edited config" || bad "upgrade changed the config"

pid=$(prop MainPID)
echo 'bogus_key: 1' >>"$conf"
dpkg --force-confold -i /nsp/v2.deb >/nsp/out/dpkg3.log 2>&1 || bad "dpkg -i v2 (bad config)"
sleep 2
if [ "$(prop MainPID)" = "$pid" ] && [ "$(prop ActiveState)" = active ] && grep -q 'NOT restarted' /nsp/out/dpkg3.log; then ok "reinstall with a refused config keeps the old process running"; else bad "reinstall with a refused config: pid $(prop MainPID) state $(prop ActiveState)"; fi
cp /nsp/out/good.yaml "$conf"

t0=$(date +%s%N)
systemctl stop smsmilter
ms=$((($(date +%s%N) - t0) / 1000000))
if [ "$(prop Result)" = success ] && [ "$(prop ExecMainStatus)" = 0 ]; then ok "stop: exit 0 in ${ms}ms"; else bad "stop: $(prop Result) status $(prop ExecMainStatus)"; fi

systemctl start smsmilter
dpkg --purge smsmilter >/nsp/out/dpkg4.log 2>&1 || bad "dpkg --purge"
if [ "$(systemctl show smsmilter -p LoadState --value)" = not-found ] && ! pgrep -x smsmilter >/dev/null && ! getent passwd smsmilter >/dev/null && [ ! -e /var/lib/smsmilter ]; then
	ok "purge stops the service and removes unit, user and state"
else
	bad "after purge: LoadState $(systemctl show smsmilter -p LoadState --value), processes $(pgrep -x smsmilter | tr '\n' ' ')"
fi
journalctl -u smsmilter --no-pager >/nsp/out/journal.log 2>&1
echo DONE >>"$res"
EOF
	if ! timeout 300 systemd-nspawn -q -D "$work/ovl/root" --register=no --link-journal=no --keep-unit \
		--private-network --machine="smsmilter-pkgci-$$" --bind="$n:/nsp" \
		--bind-ro="$n/pkgtest.service:/etc/systemd/system/pkgtest.service" \
		-b systemd.unit=pkgtest.service </dev/null >"$n/out/console.log" 2>&1; then
		if ! grep -q BOOTED "$n/out/result" 2>/dev/null; then
			tail -5 "$n/out/console.log"
			nspawn_skip "the container did not boot here"
			return 0
		fi
	fi
	if ! grep -q BOOTED "$n/out/result" 2>/dev/null; then
		tail -5 "$n/out/console.log"
		nspawn_skip "the container did not boot here"
		return 0
	fi
	sed 's/^/  /' "$n/out/result" | grep -v '^  BOOTED$\|^  DONE$'
	if grep -q '^FAIL' "$n/out/result" || ! grep -q '^DONE' "$n/out/result"; then
		echo "--- container test log (tail)"; tail -40 "$n/out/test.log"
		echo "--- smsmilter journal (tail)"; tail -30 "$n/out/journal.log" 2>/dev/null
		fail "the unit misbehaves under a real systemd (above)"
	fi
}
nspawn_stage
