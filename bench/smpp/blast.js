#!/usr/bin/env node
// blast.js: the baseline for BenchmarkSend in transports/smpp. A raw
// node-smpp client keeps WINDOW submit_sm in flight against an SMSC (the
// test peer) until COUNT were answered, and prints one JSON line:
//   {"count":N,"seconds":S,"rate":R,"p50_ms":..,"p99_ms":..}
// If smsmilter's transport gets close to this rate, the peer is the limit.
//
// Usage: node blast.js --port P [--host H] [--count N] [--window W]
//                      [--system-id ID] [--password PW]
'use strict';
const path = require('path');
const smpp = require(path.join(__dirname, '..', '..', 'transports', 'smpp', 'testdata', 'peer', 'node_modules', 'smpp'));

const o = { host: '127.0.0.1', port: 2775, count: 10000, window: 50, systemId: 'smsmilter', password: 'secret' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
	const v = argv[i + 1];
	switch (argv[i]) {
	case '--host': o.host = v; i++; break;
	case '--port': o.port = Number(v); i++; break;
	case '--count': o.count = Number(v); i++; break;
	case '--window': o.window = Number(v); i++; break;
	case '--system-id': o.systemId = v; i++; break;
	case '--password': o.password = v; i++; break;
	default:
		process.stderr.write('blast.js: unknown argument ' + argv[i] + '\n');
		process.exit(2);
	}
}

const session = smpp.connect({ host: o.host, port: o.port });
session.on('error', (e) => { process.stderr.write('blast.js: ' + e.message + '\n'); process.exit(1); });
session.on('deliver_sm', (pdu) => session.send(pdu.response()));
session.on('enquire_link', (pdu) => session.send(pdu.response()));

let sent = 0, done = 0, failed = 0, start;
const lat = [];

function one() {
	if (sent >= o.count) return;
	sent++;
	const t0 = process.hrtime.bigint();
	session.submit_sm({
		source_addr: 'ACME', source_addr_ton: 5, source_addr_npi: 0,
		destination_addr: '447400123456', dest_addr_ton: 1, dest_addr_npi: 1,
		short_message: 'Benchmark message ' + sent,
	}, (resp) => {
		lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
		if (resp.command_status) failed++;
		done++;
		if (done === o.count) finish();
		else one();
	});
}

function finish() {
	const seconds = Number(process.hrtime.bigint() - start) / 1e9;
	lat.sort((a, b) => a - b);
	const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
	process.stdout.write(JSON.stringify({ count: done, failed, seconds, rate: done / seconds,
		p50_ms: q(0.50), p99_ms: q(0.99) }) + '\n');
	session.unbind(() => session.close(() => process.exit(0)));
	setTimeout(() => process.exit(0), 1000);
}

session.on('connect', () => {
	session.bind_transceiver({ system_id: o.systemId, password: o.password }, (pdu) => {
		if (pdu.command_status) {
			process.stderr.write('blast.js: bind refused: ' + pdu.command_status + '\n');
			process.exit(1);
		}
		start = process.hrtime.bigint();
		for (let i = 0; i < o.window; i++) one();
	});
});
