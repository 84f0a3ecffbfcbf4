-- Shared by the scripts: connect to the milter under test (the Go test
-- passes its address as -D sock=inet:PORT@127.0.0.1) and helpers that
-- fail the script with a message.

function check(err, what)
	if err ~= nil then
		error(what .. ": " .. err)
	end
end

function expect(conn, want, what)
	local got = mt.getreply(conn)
	if got ~= want then
		error(what .. ": reply " .. tostring(got) .. ", want " .. tostring(want))
	end
end

function open(ip)
	local conn = mt.connect(sock, 10, 0.1)
	if conn == nil then
		error("cannot connect to " .. sock)
	end
	check(mt.negotiate(conn, nil, nil, nil), "negotiate")
	mt.macro(conn, SMFIC_CONNECT, "j", "mx.test", "{daemon_name}", "smtpd")
	check(mt.conninfo(conn, "client.example.test", ip), "conninfo")
	expect(conn, SMFIR_CONTINUE, "conninfo")
	check(mt.helo(conn, "client.example.test"), "helo")
	expect(conn, SMFIR_CONTINUE, "helo")
	return conn
end
