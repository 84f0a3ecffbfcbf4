# smsmilter %pre: the system user and group, before the files are
# installed (/etc/smsmilter/smsmilter.yaml is root:smsmilter 0640).
getent group smsmilter >/dev/null || groupadd -r smsmilter
getent passwd smsmilter >/dev/null || \
	useradd -r -g smsmilter -d /var/lib/smsmilter -M -s /sbin/nologin \
		-c "smsmilter daemon" smsmilter
# Modems (/dev/ttyUSB*, /dev/ttyACM*) belong to group dialout.
if getent group dialout >/dev/null && ! id -nG smsmilter | tr ' ' '\n' | grep -qx dialout; then
	usermod -a -G dialout smsmilter
fi
exit 0
