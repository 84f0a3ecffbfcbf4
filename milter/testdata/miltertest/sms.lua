-- An authorized sender's mail to one SMS recipient: the SMS is queued, the
-- recipient deleted, the message discarded.
dofile(dir .. "/common.lua")
conn = open("192.0.2.10")
mt.macro(conn, SMFIC_MAIL, "i", "MT1", "{mail_addr}", "alice@example.test")
check(mt.mailfrom(conn, "<alice@example.test>"), "mailfrom")
expect(conn, SMFIR_CONTINUE, "mailfrom")
mt.macro(conn, SMFIC_RCPT, "i", "MT1", "{rcpt_addr}", "+447400123456@sms.test")
check(mt.rcptto(conn, "<+447400123456@sms.test>"), "rcptto")
expect(conn, SMFIR_CONTINUE, "rcptto")
check(mt.header(conn, "From", "Alice <alice@example.test>"), "From")
check(mt.header(conn, "Subject", "from miltertest"), "Subject")
check(mt.header(conn, "Message-ID", "<miltertest-1@example.test>"), "Message-ID")
check(mt.eoh(conn), "eoh")
expect(conn, SMFIR_CONTINUE, "eoh")
check(mt.bodystring(conn, "Sent through miltertest.\r\n"), "body")
expect(conn, SMFIR_CONTINUE, "body")
check(mt.eom(conn), "eom")
expect(conn, SMFIR_DISCARD, "eom")
if not mt.eom_check(conn, MT_RCPTDELETE, "<+447400123456@sms.test>") then
	error("the SMS recipient was not deleted")
end
mt.disconnect(conn)
