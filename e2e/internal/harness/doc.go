// Package harness runs the real programs of an end-to-end test: a private
// Postfix instance, smtp-sink capturing what Postfix relays, the smsmilter
// daemon built from this checkout, swaks as the mail client, and helpers to
// read what came out (sink files, POP3 mailboxes, smsmilter's CLI).
//
// Everything lives in temporary folders and on loopback ports, and every
// process is stopped by t.Cleanup, also when the test fails. The MTA-neutral
// parts (Sink, Smsmilter, Swaks, POP3) serve the Sendmail suite too, and
// Env is the installation both MTA suites share: the cast, DNS, the SMPP
// peer, smsmilter, and the checks and flows of smsmilter's part.
//
// Call testutil.Main from the test package's TestMain so that the
// smsmilter binary built for the run (testutil.Smsmilter) is removed
// afterwards:
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
package harness
