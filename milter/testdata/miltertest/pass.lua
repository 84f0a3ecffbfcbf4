-- Mail with no SMS recipient: accepted at the first header, so the MTA
-- sends smsmilter none of the body.
dofile(dir .. "/common.lua")
conn = open("192.0.2.10")
check(mt.mailfrom(conn, "<alice@example.test>"), "mailfrom")
expect(conn, SMFIR_CONTINUE, "mailfrom")
check(mt.rcptto(conn, "<bob@elsewhere.test>"), "rcptto")
expect(conn, SMFIR_CONTINUE, "rcptto")
check(mt.header(conn, "From", "alice@example.test"), "header")
expect(conn, SMFIR_ACCEPT, "header")
mt.disconnect(conn)
