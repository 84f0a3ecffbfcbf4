-- A recipient that is not a mobile number is rejected alone (a custom
-- reply: miltertest shows only its kind); the session goes on, and a mixed
-- message keeps its other recipient.
dofile(dir .. "/common.lua")
conn = open("192.0.2.10")
check(mt.mailfrom(conn, "<alice@example.test>"), "mailfrom")
expect(conn, SMFIR_CONTINUE, "mailfrom")
check(mt.rcptto(conn, "<+8180123@sms.test>"), "rcptto too short")
expect(conn, SMFIR_REPLYCODE, "rcptto too short")
check(mt.rcptto(conn, "<+442071234567@sms.test>"), "rcptto fixed line")
expect(conn, SMFIR_REPLYCODE, "rcptto fixed line")
check(mt.rcptto(conn, "<+819012345678@sms.test>"), "rcptto mobile")
expect(conn, SMFIR_CONTINUE, "rcptto mobile")
check(mt.rcptto(conn, "<carol@elsewhere.test>"), "rcptto other")
expect(conn, SMFIR_CONTINUE, "rcptto other")
check(mt.header(conn, "From", "alice@example.test"), "From")
check(mt.header(conn, "Message-ID", "<miltertest-2@example.test>"), "Message-ID")
check(mt.eoh(conn), "eoh")
check(mt.bodystring(conn, "Mixed.\r\n"), "body")
check(mt.eom(conn), "eom")
expect(conn, SMFIR_ACCEPT, "eom")
if not mt.eom_check(conn, MT_RCPTDELETE, "<+819012345678@sms.test>") then
	error("the SMS recipient was not deleted")
end
if mt.eom_check(conn, MT_RCPTDELETE, "<carol@elsewhere.test>") then
	error("the other recipient was deleted")
end
mt.disconnect(conn)
