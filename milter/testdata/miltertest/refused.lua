-- A sender no rule authorizes: the whole message is refused with a custom
-- 550 at end of message.
dofile(dir .. "/common.lua")
conn = open("192.0.2.10")
check(mt.mailfrom(conn, "<mallory@example.test>"), "mailfrom")
check(mt.rcptto(conn, "<+447400123456@sms.test>"), "rcptto")
expect(conn, SMFIR_CONTINUE, "rcptto")
check(mt.header(conn, "From", "mallory@example.test"), "From")
check(mt.eoh(conn), "eoh")
check(mt.bodystring(conn, "Let me in.\r\n"), "body")
check(mt.eom(conn), "eom")
expect(conn, SMFIR_REPLYCODE, "eom")
if not mt.eom_check(conn, MT_SMTPREPLY, "550") then
	mt.echo("note: this miltertest does not report the reply code")
end
mt.disconnect(conn)
