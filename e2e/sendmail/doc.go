// Package sendmail holds smsmilter's Sendmail end-to-end suite: a real
// Sendmail 8.17 MTA with smsmilter attached as examples/sendmail/smsmilter.mc
// attaches it, the smsmilter binary built from this checkout, an SMPP peer
// (node-smpp), a DNS server for SPF, swaks as the mail client, smtp-sink
// standing in for the rest of the Internet, and Sendmail's own submission
// program (the MSP) for mail from local programs. The plumbing shared with
// the Postfix suite is e2e/internal/harness.
//
// Sendmail is not installed: Debian's sendmail-bin conflicts with postfix,
// which the other suites need. e2e/sendmail/ci.sh downloads the packages
// and unpacks them into a folder of their own (SMSMILTER_SENDMAIL_ROOT,
// default /var/cache/smsmilter-e2e/sendmail); the suite generates its own
// sendmail.cf there with the packages' m4 macros and runs the binary as a
// daemon with -C, on loopback ports, with its own queue. Each Sendmail
// process runs in private mount and UTS namespaces (unshare) so that it can
// have a host name of its own, an /etc/hosts naming the test hosts, and a
// /dev/log that is this suite's socket: its mail log is read by the tests.
//
// The suite needs root, unshare and nsenter (util-linux), swaks,
// smtp-sink (postfix), node with the peer's npm modules, and ci.sh run
// once; without them it is skipped on a developer machine and fails in CI.
//
//	sudo e2e/sendmail/ci.sh && sudo go test ./e2e/sendmail/ -v
package sendmail
