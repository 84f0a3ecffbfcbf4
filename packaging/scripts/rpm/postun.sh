# smsmilter %postun ($1: 0 erase, 1 upgrade). As RPM-based systems expect,
# erasing keeps the smsmilter user and group and /var/lib/smsmilter (the
# store); a changed config is kept as smsmilter.yaml.rpmsave.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
fi
exit 0
