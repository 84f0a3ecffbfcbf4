# smsmilter %preun ($1: 0 erase, 1 upgrade). On upgrade the service keeps
# running; the new package's %post restarted it already.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now smsmilter.service >/dev/null 2>&1 || :
	else
		systemctl --no-reload disable smsmilter.service >/dev/null 2>&1 || :
	fi
fi
exit 0
