package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
)

// explainEnv: user ops, an ip rule for 192.0.2.0/24, an address rule for
// carol@corp.example (security spf) and corp.example's SPF record on the
// test DNS server.
func explainEnv(t *testing.T) *env {
	e := newEnv(t, "")
	e.must("user", "add", "ops", "--sender-id", "ACME")
	e.must("ip", "add", "192.0.2.0/24", "--user", "ops")
	e.must("address", "add", "carol@corp.example", "--user", "ops")
	e.dns.TXT("corp.example", "v=spf1 ip4:203.0.113.0/24 -all")
	return e
}

func TestExplain(t *testing.T) {
	e := explainEnv(t)
	plain := filepath.Join("testdata", "plain.eml")

	// carol@corp.example has an address rule, which wins over the ip
	// rule; the mail from the ip rule's network is checked by it only
	// when no address rule matches: yamada@ has none.
	r := e.run("explain", filepath.Join("testdata", "html-ja.eml"), "--client-ip", "192.0.2.7", "--helo", "mx.corp.example", "--to", "+819012345678")
	check(t, "ip rule", r, 0,
		"Recipient: +819012345678 (JP)",
		`client 192.0.2.7, HELO "mx.corp.example", MAIL FROM <yamada@corp.example>`,
		"Rule: ip 192.0.2.0/24",
		"client IP 192.0.2.7 is inside 192.0.2.0/24",
		"Decision: WOULD SEND as user ops (sender ID ACME)",
		"SMS preview: encoding UCS-2 (ucs2)",
		"了解しました。",
		"https://example.com/m")
	if strings.Contains(r.stdout, "<a") || strings.Contains(r.stdout, "<p>") {
		t.Errorf("markup in the SMS preview:\n%s", r.stdout)
	}

	r = e.run("explain", plain, "--client-ip", "203.0.113.9", "--to", "+447400123456@sms.example.com")
	check(t, "address rule, SPF pass", r, 0,
		"Rule: address carol@corp.example",
		"SPF:   pass",
		"Decision: WOULD SEND as user ops (sender ID ACME)",
		"SMS preview: encoding GSM 7-bit (gsm7)",
		"The build server is down,", "please call me.")
	if strings.Contains(r.stdout, "Corp Example Ltd") {
		t.Errorf("the signature reached the SMS preview:\n%s", r.stdout)
	}

	// The same sender from a server SPF does not allow: the address rule
	// decides (no fall-through to the ip rule) and refuses.
	r = e.run("explain", plain, "--client-ip", "192.0.2.7")
	check(t, "address rule, SPF fail", r, 1, "Rule: address carol@corp.example", "SPF:   fail", "Decision: REFUSED: 550 5.7.1")

	// A sender no rule covers.
	r = e.run("explain", filepath.Join("testdata", "stranger.eml"), "--client-ip", "198.51.100.1")
	check(t, "no rule", r, 1, "Rule: none matched", "Decision: REFUSED: 550 5.7.1",
		"no rule authorizes this sender (From mallory@evil.example, envelope sender mallory@evil.example, client IP 198.51.100.1)")
	r = e.run("explain", filepath.Join("testdata", "html-ja.eml"), "--client-ip", "198.51.100.1", "--mail-from", "bounce@lists.example")
	check(t, "no rule for yamada", r, 1, "no rule authorizes this sender", "From yamada@corp.example", "envelope sender bounce@lists.example")

	// A recipient that is not a mobile number is refused at RCPT.
	check(t, "bad number", e.run("explain", plain, "--client-ip", "192.0.2.7", "--to", "+44123"), 1, "Recipient: REFUSED at RCPT")

	// Nothing was queued or sent.
	check(t, "queue", e.run("queue"), 0, "queued 0, sending 0, sent 0, delivered 0, failed 0")
	if _, err := os.Stat(filepath.Join(e.dir, "outbox.jsonl")); err == nil {
		t.Errorf("explain wrote to the outbox")
	}

	// Bad usage: exit 2 with a message.
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"bad client ip", []string{plain, "--client-ip", "300.1.1.1"}, `--client-ip "300.1.1.1" is not an IP address`},
		{"client ip is a name", []string{plain, "--client-ip", "mx.example.com"}, `--client-ip "mx.example.com" is not an IP address`},
		{"no client ip", []string{plain}, "--client-ip IP is required"},
		{"no file", []string{"--client-ip", "192.0.2.7"}, "give exactly one FILE.eml"},
		{"missing file", []string{"nope.eml", "--client-ip", "192.0.2.7"}, "nope.eml"},
		{"no headers", []string{filepath.Join("testdata", "noheader.eml"), "--client-ip", "192.0.2.7"}, "has no header fields"},
		{"unknown flag", []string{plain, "--client-ip", "192.0.2.7", "--from", "x@example.com"}, "flag provided but not defined: -from"},
	} {
		check(t, c.name, e.run(append([]string{"explain"}, c.args...)...), 2, c.want)
	}
}

// A DNS failure in a check the rule needs is no verdict: explain says the
// decision cannot be made now (the milter's 451) and exits 1.
func TestExplainDNSTimeout(t *testing.T) {
	e := explainEnv(t)
	cfg := strings.Replace(readFile(t, e.cfgPath), "timeout: 2s", "timeout: 300ms", 1)
	e.writeFile("smsmilter.yaml", cfg)
	e.dns.Set("corp.example", dnstest.Drop)
	r := e.run("explain", filepath.Join("testdata", "plain.eml"), "--client-ip", "203.0.113.9")
	check(t, "SPF lookup times out", r, 1, "Decision: REFUSED: 451 4.7.0")
}
