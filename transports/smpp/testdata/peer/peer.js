#!/usr/bin/env node
// A scriptable SMSC for smsmilter's tests, built on node-smpp (npm "smpp",
// pinned in package.json). It is third-party SMPP code on purpose: our Go
// transport is checked against someone else's reading of the protocol.
//
// Usage: node peer.js [--port N] [--host H] [--system-id ID] [--password PW]
//                     [--receipts tlv|text|off] [--receipt-delay MS] [--quiet]
//
// --port 0 (the default) picks a free port. Everything the peer has to say is
// one JSON object per line on stdout:
//   {"event":"listening","port":N}
//   {"event":"bind","system_id":..,"bind_type":..,"status":N}
//   {"event":"close","system_id":..}
//   {"event":"submit_sm", ...every field of the submit_sm, what was answered}
//   {"event":"deliver_sm_resp","kind":"mo|receipt|raw","status":N,"message_id":..}
//   {"event":"ack","id":..,"ok":true|false,"error":..}  (answer to a command)
//   {"event":"stats",...}
// --quiet leaves out submit_sm and deliver_sm_resp lines (benchmarks).
//
// Commands arrive on stdin, one JSON object per line, with an optional "id"
// echoed in the ack:
//   {"cmd":"mo","from":"447400123456","to":"12345","text":"hi","coding":0,
//    "ton":1,"npi":1,"parts":1}           inject an MO deliver_sm (parts>1: UDH)
//   {"cmd":"receipt","message_id":"..","stat":"DELIVRD","err":"000","tlv":true}
//   {"cmd":"deliver_raw","short_message_hex":"..","esm_class":4,"data_coding":0,
//    "source_addr":"..","source_addr_ton":1,"receipted_message_id":"..","message_state":2}
//   {"cmd":"drop"}                         destroy every link now
//   {"cmd":"drop_after","n":N}             answer N more submit_sm, then drop
//                                          every link on the next one (unanswered)
//   {"cmd":"throttle","n":N,"status":88}   answer the next N submit_sm with status
//   {"cmd":"refuse_binds","ms":MS,"status":13}  refuse binds for MS milliseconds
//   {"cmd":"fail_number","number":"4474..","status":11}  (status 0 clears)
//   {"cmd":"pause"} / {"cmd":"resume"}     hold / release submit_sm responses
//   {"cmd":"receipts","mode":"tlv|text|off","delay_ms":0}
//   {"cmd":"receipt_status","number":"..","stat":"UNDELIV","err":"001",
//    "intermediate":["ENROUTE"]}           receipts for submits to that number
//   {"cmd":"unbind"}                       send unbind on every link
//   {"cmd":"stats"}
// The peer exits when stdin closes.
'use strict';

const smpp = require('smpp');
const readline = require('readline');

function parseArgs(argv) {
	const o = { port: 0, host: '127.0.0.1', systemId: 'smsmilter', password: 'secret',
		receipts: 'tlv', receiptDelay: 0, quiet: false };
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		const next = () => argv[++i];
		switch (a) {
		case '--port': o.port = Number(next()); break;
		case '--host': o.host = next(); break;
		case '--system-id': o.systemId = next(); break;
		case '--password': o.password = next(); break;
		case '--receipts': o.receipts = next(); break;
		case '--receipt-delay': o.receiptDelay = Number(next()); break;
		case '--quiet': o.quiet = true; break;
		default:
			process.stderr.write('peer.js: unknown argument ' + a + '\n');
			process.exit(2);
		}
	}
	return o;
}

const opts = parseArgs(process.argv.slice(2));

// node-smpp decodes short_message in place; keep the raw octets too, so the
// tests see exactly what was on the wire.
const origFilter = smpp.PDU.prototype._filter;
smpp.PDU.prototype._filter = function (func) {
	if (func === 'decode' && Buffer.isBuffer(this.short_message)) {
		this._raw_sm = Buffer.from(this.short_message);
	}
	return origFilter.call(this, func);
};

function emit(obj) {
	process.stdout.write(JSON.stringify(obj) + '\n');
}

const state = {
	sessions: new Set(),   // bound sessions
	throttleLeft: 0,
	throttleStatus: smpp.ESME_RTHROTTLED,
	dropAfter: -1,
	refuseUntil: 0,
	refuseStatus: smpp.ESME_RBINDFAIL,
	failNumbers: new Map(),
	paused: false,
	held: [],
	receiptMode: opts.receipts,
	receiptDelay: opts.receiptDelay,
	receiptStatus: new Map(),
	queue: [],              // deliver_sm waiting for a receiver-capable link
	submits: 0,
	binds: 0,
	delivered: 0,
	msgCounter: 0,
};

const messageStates = { ENROUTE: 1, DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5,
	ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8 };

function nextMessageId() {
	state.msgCounter++;
	// Hex, like many SMSCs; unique across links for the peer's lifetime.
	return 'a' + state.msgCounter.toString(16).padStart(9, '0');
}

function canReceive(s) {
	return s.bindType === 'bind_transceiver' || s.bindType === 'bind_receiver';
}

function smscTime(d) {
	const p = (n) => String(n).padStart(2, '0');
	return p(d.getUTCFullYear() % 100) + p(d.getUTCMonth() + 1) + p(d.getUTCDate()) +
		p(d.getUTCHours()) + p(d.getUTCMinutes());
}

// deliver sends a deliver_sm on `prefer` when it can receive, else on any
// receiver-capable link, else queues it until one binds (store and forward).
function deliver(options, kind, meta, prefer) {
	let target = null;
	if (prefer && state.sessions.has(prefer) && canReceive(prefer)) {
		target = prefer;
	} else {
		for (const s of state.sessions) {
			if (canReceive(s)) { target = s; break; }
		}
	}
	if (!target) {
		state.queue.push({ options, kind, meta });
		return;
	}
	const ok = target.deliver_sm(options, (resp) => {
		state.delivered++;
		if (!opts.quiet) {
			emit(Object.assign({ event: 'deliver_sm_resp', kind, status: resp.command_status }, meta));
		}
	});
	if (!ok) {
		state.queue.push({ options, kind, meta });
	}
}

function flushQueue() {
	const q = state.queue;
	state.queue = [];
	for (const item of q) {
		deliver(item.options, item.kind, item.meta);
	}
}

function receiptPDU(id, stat, err, withTLV, handset, esme, text) {
	const now = smscTime(new Date());
	const dlvrd = stat === 'DELIVRD' ? '001' : '000';
	const body = 'id:' + id + ' sub:001 dlvrd:' + dlvrd + ' submit date:' + now +
		' done date:' + now + ' stat:' + stat + ' err:' + err + ' text:' +
		(text || '').replace(/[^\x20-\x7e]/g, '?').slice(0, 20);
	const o = {
		source_addr: handset || '', source_addr_ton: 1, source_addr_npi: 1,
		destination_addr: esme || '', dest_addr_ton: 0, dest_addr_npi: 0,
		esm_class: smpp.ESM_CLASS.MC_DELIVERY_RECEIPT,
		data_coding: 0,
		short_message: Buffer.from(body, 'latin1'),
	};
	if (withTLV) {
		o.receipted_message_id = id;
		o.message_state = messageStates[stat] || 7;
	}
	return o;
}

function scheduleReceipts(session, rec) {
	const rd = rec.registered_delivery & 0x03;
	if (state.receiptMode === 'off' || rd === 0) {
		return;
	}
	const st = state.receiptStatus.get(rec.destination_addr) ||
		{ stat: 'DELIVRD', err: '000', intermediate: [] };
	if (rd === 2 && st.stat === 'DELIVRD') {
		return; // receipt on failure only
	}
	const send = () => {
		for (const s of st.intermediate || []) {
			deliver(receiptPDU(rec.message_id, s, '000', state.receiptMode === 'tlv',
				rec.destination_addr, rec.source_addr, rec.text), 'receipt',
			{ message_id: rec.message_id, stat: s }, session);
		}
		deliver(receiptPDU(rec.message_id, st.stat, st.err, state.receiptMode === 'tlv',
			rec.destination_addr, rec.source_addr, rec.text), 'receipt',
		{ message_id: rec.message_id, stat: st.stat }, session);
	};
	if (state.receiptDelay > 0) {
		setTimeout(send, state.receiptDelay);
	} else {
		setImmediate(send);
	}
}

function parseConcat(udh) {
	// udh: full header including UDHL.
	let i = 1;
	while (i + 1 < udh.length) {
		const id = udh[i], len = udh[i + 1];
		const d = udh.slice(i + 2, i + 2 + len);
		if (id === 0x00 && len === 3) {
			return { ref_bits: 8, ref: d[0], total: d[1], part: d[2] };
		}
		if (id === 0x08 && len === 4) {
			return { ref_bits: 16, ref: d.readUInt16BE(0), total: d[2], part: d[3] };
		}
		i += 2 + len;
	}
	return null;
}

function destroyAll() {
	for (const s of Array.from(state.sessions)) {
		s.destroy();
	}
	state.sessions.clear();
}

function handleSubmit(session, pdu) {
	if (!state.sessions.has(session)) {
		session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
		return;
	}
	state.submits++;
	const raw = pdu._raw_sm || Buffer.alloc(0);
	const udhi = (pdu.esm_class & 0x40) !== 0;
	let udh = null;
	if (udhi && raw.length > 0 && raw[0] + 1 <= raw.length) {
		udh = raw.slice(0, raw[0] + 1);
	}
	let text = null;
	const sm = pdu.short_message;
	if (sm && typeof sm === 'object' && !Buffer.isBuffer(sm)) {
		text = Buffer.isBuffer(sm.message) ? null : sm.message;
	} else if (typeof sm === 'string') {
		text = sm;
	}
	const rec = {
		event: 'submit_sm',
		seq: pdu.sequence_number,
		system_id: session.systemId,
		service_type: pdu.service_type,
		source_addr: pdu.source_addr,
		source_addr_ton: pdu.source_addr_ton,
		source_addr_npi: pdu.source_addr_npi,
		destination_addr: pdu.destination_addr,
		dest_addr_ton: pdu.dest_addr_ton,
		dest_addr_npi: pdu.dest_addr_npi,
		esm_class: pdu.esm_class,
		registered_delivery: pdu.registered_delivery,
		data_coding: pdu.data_coding,
		udh_hex: udh ? udh.toString('hex') : '',
		concat: udh ? parseConcat(udh) : null,
		short_message_hex: raw.toString('hex'),
		text: text,
		status: 0,
		message_id: '',
		dropped: false,
	};

	if (state.dropAfter === 0) {
		state.dropAfter = -1;
		rec.dropped = true;
		if (!opts.quiet) emit(rec);
		destroyAll();
		return;
	}
	if (state.dropAfter > 0) {
		state.dropAfter--;
	}

	let status = 0;
	if (state.throttleLeft > 0) {
		state.throttleLeft--;
		status = state.throttleStatus;
	} else if (state.failNumbers.has(pdu.destination_addr)) {
		status = state.failNumbers.get(pdu.destination_addr);
	}
	let resp;
	if (status) {
		rec.status = status;
		resp = pdu.response({ command_status: status });
	} else {
		rec.message_id = nextMessageId();
		resp = pdu.response({ message_id: rec.message_id });
	}
	if (!opts.quiet) emit(rec);
	const answer = () => {
		session.send(resp);
		if (!status) scheduleReceipts(session, rec);
	};
	if (state.paused) {
		state.held.push(answer);
	} else {
		answer();
	}
}

const bindTypes = ['bind_transceiver', 'bind_transmitter', 'bind_receiver'];

const server = smpp.createServer((session) => {
	session.on('error', () => { /* a dropped peer; 'close' follows */ });
	for (const bt of bindTypes) {
		session.on(bt, (pdu) => {
			let status = 0;
			if (Date.now() < state.refuseUntil) {
				status = state.refuseStatus;
			} else if (pdu.system_id !== opts.systemId) {
				status = smpp.ESME_RINVSYSID;
			} else if (pdu.password !== opts.password) {
				status = smpp.ESME_RINVPASWD;
			}
			emit({ event: 'bind', system_id: pdu.system_id, bind_type: bt,
				system_type: pdu.system_type, status });
			if (status) {
				session.send(pdu.response({ command_status: status }), () => session.close());
				return;
			}
			state.binds++;
			session.systemId = pdu.system_id;
			session.bindType = bt;
			session.send(pdu.response({ system_id: 'nodepeer' }));
			state.sessions.add(session);
			flushQueue();
		});
	}
	session.on('submit_sm', (pdu) => handleSubmit(session, pdu));
	session.on('enquire_link', (pdu) => session.send(pdu.response()));
	session.on('unbind', (pdu) => {
		state.sessions.delete(session);
		session.send(pdu.response(), () => session.close());
	});
	session.on('unknown', (pdu) => session.send(pdu.response()));
	session.on('close', () => {
		if (session.bindType) {
			emit({ event: 'close', system_id: session.systemId });
		}
		state.sessions.delete(session);
	});
});

server.on('error', (e) => {
	process.stderr.write('peer.js: ' + e.message + '\n');
	process.exit(1);
});

// encodeMO turns text into `parts` short_message buffers for data_coding.
function encodeMO(text, coding, parts) {
	const enc = (s) => {
		switch (coding) {
		case 8: return smpp.encodings.UCS2.encode(s);
		case 3: return smpp.encodings.LATIN1.encode(s);
		default: return smpp.encodings.ASCII.encode(s); // GSM 03.38, unpacked
		}
	};
	if (parts <= 1) {
		return [enc(text)];
	}
	const cps = Array.from(text); // code points: surrogate pairs stay whole
	const size = Math.ceil(cps.length / parts);
	const ref = Math.floor(Math.random() * 256);
	const out = [];
	for (let i = 0; i < parts; i++) {
		const udh = Buffer.from([0x05, 0x00, 0x03, ref, parts, i + 1]);
		out.push(Buffer.concat([udh, enc(cps.slice(i * size, (i + 1) * size).join(''))]));
	}
	return out;
}

const commands = {
	mo(c) {
		const coding = c.coding || 0;
		const parts = c.parts || 1;
		const bufs = encodeMO(c.text || '', coding, parts);
		for (const b of bufs) {
			deliver({
				source_addr: c.from || '', source_addr_ton: c.ton === undefined ? 1 : c.ton,
				source_addr_npi: c.npi === undefined ? 1 : c.npi,
				destination_addr: c.to || '', dest_addr_ton: c.to_ton || 0, dest_addr_npi: c.to_npi || 0,
				esm_class: parts > 1 ? 0x40 : 0,
				data_coding: coding,
				short_message: b,
			}, 'mo', { from: c.from });
		}
	},
	receipt(c) {
		deliver(receiptPDU(c.message_id, c.stat || 'DELIVRD', c.err || '000', c.tlv !== false,
			c.from || '', c.to || '', c.text || ''), 'receipt', { message_id: c.message_id, stat: c.stat });
	},
	deliver_raw(c) {
		const o = {
			source_addr: c.source_addr || '', source_addr_ton: c.source_addr_ton || 0,
			source_addr_npi: c.source_addr_npi || 0,
			destination_addr: c.destination_addr || '', dest_addr_ton: 0, dest_addr_npi: 0,
			esm_class: c.esm_class || 0, data_coding: c.data_coding || 0,
			short_message: Buffer.from(c.short_message_hex || '', 'hex'),
		};
		if (c.receipted_message_id !== undefined) o.receipted_message_id = c.receipted_message_id;
		if (c.message_state !== undefined) o.message_state = c.message_state;
		deliver(o, 'raw', {});
	},
	drop() { destroyAll(); },
	drop_after(c) { state.dropAfter = c.n || 0; },
	throttle(c) {
		state.throttleLeft = c.n || 0;
		state.throttleStatus = c.status || smpp.ESME_RTHROTTLED;
	},
	refuse_binds(c) {
		state.refuseUntil = Date.now() + (c.ms || 0);
		state.refuseStatus = c.status || smpp.ESME_RBINDFAIL;
	},
	fail_number(c) {
		if (c.status) state.failNumbers.set(c.number, c.status);
		else state.failNumbers.delete(c.number);
	},
	pause() { state.paused = true; },
	resume() {
		state.paused = false;
		const h = state.held;
		state.held = [];
		for (const f of h) f();
	},
	receipts(c) {
		if (c.mode) state.receiptMode = c.mode;
		if (c.delay_ms !== undefined) state.receiptDelay = c.delay_ms;
	},
	receipt_status(c) {
		if (!c.stat) state.receiptStatus.delete(c.number);
		else state.receiptStatus.set(c.number, { stat: c.stat, err: c.err || '000', intermediate: c.intermediate || [] });
	},
	unbind() {
		for (const s of state.sessions) s.unbind();
	},
	stats() {
		emit({ event: 'stats', submits: state.submits, binds: state.binds,
			sessions: state.sessions.size, delivered: state.delivered,
			queued: state.queue.length, held: state.held.length });
	},
};

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
	line = line.trim();
	if (!line) return;
	let c;
	try {
		c = JSON.parse(line);
	} catch (e) {
		emit({ event: 'ack', ok: false, error: 'bad JSON: ' + e.message });
		return;
	}
	const f = commands[c.cmd];
	if (!f) {
		emit({ event: 'ack', id: c.id, ok: false, error: 'unknown command ' + c.cmd });
		return;
	}
	try {
		f(c);
		emit({ event: 'ack', id: c.id, ok: true });
	} catch (e) {
		emit({ event: 'ack', id: c.id, ok: false, error: String(e && e.stack || e) });
	}
});
rl.on('close', () => {
	destroyAll();
	server.close();
	process.exit(0);
});

server.listen(opts.port, opts.host, () => {
	emit({ event: 'listening', port: server.address().port });
});
