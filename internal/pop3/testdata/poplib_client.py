"""Drives Python's poplib against the server under test (run by Go tests
with Debian's /usr/bin/python3). Prints one JSON object with what it saw.

usage: poplib_client.py HOST PORT MODE USER PASSWORD
MODE: plain | stls | ssl
"""
import json
import poplib
import ssl
import sys


def main():
    host, port, mode, user, password = sys.argv[1:6]
    port = int(port)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if mode == "ssl":
        p = poplib.POP3_SSL(host, port, context=ctx, timeout=10)
    else:
        p = poplib.POP3(host, port, timeout=10)
    out = {"welcome": p.getwelcome().decode()}
    out["capa"] = sorted(p.capa().keys())
    if mode == "stls":
        out["stls"] = p.stls(context=ctx).decode()
        out["capa_after_stls"] = sorted(p.capa().keys())
    out["user"] = p.user(user).decode()
    out["pass"] = p.pass_(password).decode()
    out["stat"] = list(p.stat())
    resp, lines, octets = p.list()
    out["list"] = [l.decode() for l in lines]
    resp, lines, octets = p.uidl()
    out["uidl"] = [l.decode() for l in lines]
    out["uidl1"] = p.uidl(1).decode()
    resp, lines, octets = p.top(1, 1)
    out["top"] = [l.decode() for l in lines]
    resp, lines, octets = p.retr(1)
    out["retr"] = [l.decode() for l in lines]
    out["retr_octets"] = octets
    out["dele"] = p.dele(1).decode()
    try:
        p.retr(1)
        out["retr_deleted"] = "no error"
    except poplib.error_proto as e:
        out["retr_deleted"] = str(e.args[0].decode())
    out["noop"] = p.noop().decode()
    out["quit"] = p.quit().decode()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
