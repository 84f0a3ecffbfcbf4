# smsmilter %post ($1: 1 install, 2 or more upgrade).
#
# The service is enabled, but started only when the admin has made the
# config their own: on first install only if /etc/smsmilter/smsmilter.yaml
# differs from the packaged default (/usr/share/smsmilter/smsmilter.yaml)
# and `smsmilter check-config` accepts it; on upgrade it is restarted only
# if it was running and the new version accepts the config (otherwise the
# old process keeps running). Without a running systemd nothing is started.
UNIT=smsmilter.service
CONF=/etc/smsmilter/smsmilter.yaml
DEFAULT=/usr/share/smsmilter/smsmilter.yaml

check_config() {
	[ -f "$CONF" ] || { echo "$CONF: no such file"; return 1; }
	out=$(runuser -u smsmilter -- /usr/bin/smsmilter check-config --config "$CONF" 2>&1) && return 0
	printf '%s\n' "$out"
	return 1
}

if [ ! -d /var/lib/smsmilter ]; then
	install -d -o smsmilter -g smsmilter -m 0750 /var/lib/smsmilter
fi

if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
	systemctl enable "$UNIT" >/dev/null 2>&1 || :
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
	if systemctl is-active --quiet "$UNIT"; then
		if problems=$(check_config); then
			systemctl restart "$UNIT" || echo "smsmilter: restart failed: see journalctl -u smsmilter" >&2
		else
			echo "smsmilter: NOT restarted: this version refuses $CONF:" >&2
			printf '%s\n' "$problems" | sed 's/^/  /' >&2
			echo "smsmilter: the old version keeps running; fix the file, then: systemctl restart smsmilter" >&2
		fi
	elif [ "$1" -eq 1 ]; then
		if [ -f "$DEFAULT" ] && cmp -s "$CONF" "$DEFAULT"; then
			echo "smsmilter: not started: $CONF is the packaged default."
			echo "smsmilter: edit it (sms_domains, transports), then: smsmilter check-config && systemctl start smsmilter"
		elif problems=$(check_config); then
			systemctl start "$UNIT" || echo "smsmilter: start failed: see journalctl -u smsmilter" >&2
		else
			echo "smsmilter: not started: $CONF has problems:" >&2
			printf '%s\n' "$problems" | sed 's/^/  /' >&2
		fi
	fi
fi
exit 0
