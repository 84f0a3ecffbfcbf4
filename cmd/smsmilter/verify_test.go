package main

import (
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
)

// addDomain adds a domain rule for ops and returns its token.
func (e *env) addDomain(domain string) string {
	e.t.Helper()
	r := e.must("domain", "add", domain, "--user", "ops")
	m := tokenRE.FindStringSubmatch(r.stdout)
	if m == nil {
		e.t.Fatalf("no token printed:\n%v", r)
	}
	return m[1]
}

// domainState is the STATE column of `list` for a domain rule.
func (e *env) domainState(domain string) string {
	e.t.Helper()
	for _, row := range table(e.must("list").stdout, "KIND") {
		if len(row) == 8 && row[0] == "domain" && row[1] == domain {
			return row[7]
		}
	}
	e.t.Fatalf("list does not show domain %s", domain)
	return ""
}

// TestDomainVerify runs `domain verify` against a real DNS server on
// loopback (dns.resolver in the config).
func TestDomainVerify(t *testing.T) {
	e := newEnv(t, "")
	e.must("user", "add", "ops", "--sender-id", "ACME")

	t.Run("found", func(t *testing.T) {
		e.t = t
		tok := e.addDomain("example.com")
		if s := e.domainState("example.com"); s != "not verified" {
			t.Fatalf("new domain rule is %q", s)
		}
		// Other TXT records next to ours, and ours split into several
		// character-strings, as long records are published.
		e.dns.TXT("example.com", "v=spf1 -all")
		e.dns.Add(`example.com. 60 IN TXT "smsmilter-" "verification=` + tok + `"`)
		r := e.run("domain", "verify", "example.com")
		check(t, "verify", r, 0, "example.com verified", tok, "active")
		if s := e.domainState("example.com"); s != "active" {
			t.Errorf("after verify, list shows example.com as %q, want active", s)
		}
		if rl := e.rules()["domain:example.com"]; !rl.Verified || time.Since(rl.VerifiedAt) > time.Minute {
			t.Errorf("rule after verify: %+v", rl)
		}
		check(t, "log", e.run("log", "--kind", "registry"), 0, "domain example.com verified")
		// Verifying again is harmless.
		check(t, "verify again", e.run("domain", "verify", "EXAMPLE.COM."), 0, "verified")
	})

	t.Run("wrong token", func(t *testing.T) {
		e.t = t
		tok := e.addDomain("wrong.example")
		old := strings.Repeat("0", 32)
		e.dns.TXT("wrong.example", "smsmilter-verification="+old)
		r := e.run("domain", "verify", "wrong.example")
		check(t, "verify", r, 1, "not verified", "smsmilter-verification="+old, "smsmilter-verification="+tok, "wrong token")
		if s := e.domainState("wrong.example"); s != "not verified" {
			t.Errorf("list shows %q", s)
		}
	})

	t.Run("other TXT records only", func(t *testing.T) {
		e.t = t
		tok := e.addDomain("other.example")
		e.dns.TXT("other.example", "v=spf1 include:_spf.google.com ~all")
		e.dns.TXT("other.example", "google-site-verification=abc")
		r := e.run("domain", "verify", "other.example")
		check(t, "verify", r, 1, "not verified", "2 TXT record(s)", "v=spf1 include:_spf.google.com ~all", "google-site-verification=abc", tok)
	})

	t.Run("no TXT record", func(t *testing.T) {
		e.t = t
		tok := e.addDomain("notxt.example")
		e.dns.Add("notxt.example. 60 IN A 192.0.2.1") // the name exists
		r := e.run("domain", "verify", "notxt.example")
		check(t, "verify", r, 1, "not verified", "no TXT records", "Publish", tok)
	})

	t.Run("NXDOMAIN", func(t *testing.T) {
		e.t = t
		tok := e.addDomain("nxdomain.example")
		r := e.run("domain", "verify", "nxdomain.example")
		check(t, "verify", r, 1, "not verified", "no TXT records", tok)
		if e.dns.Queries("nxdomain.example") == 0 {
			t.Errorf("the configured DNS server was not asked")
		}
	})

	t.Run("SERVFAIL", func(t *testing.T) {
		e.t = t
		tok := e.addDomain("servfail.example")
		e.dns.TXT("servfail.example", "smsmilter-verification="+tok)
		e.dns.Set("servfail.example", dnstest.ServFail)
		r := e.run("domain", "verify", "servfail.example")
		check(t, "verify", r, 1, "not verified", "DNS lookup failed", "SERVFAIL", "Try again later")
		if s := e.domainState("servfail.example"); s != "not verified" {
			t.Errorf("list shows %q", s)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		e.t = t
		tok := e.addDomain("slow.example")
		e.dns.TXT("slow.example", "smsmilter-verification="+tok)
		e.dns.Set("slow.example", dnstest.Drop) // never answers
		cfg := strings.Replace(readFile(t, e.cfgPath), "timeout: 2s", "timeout: 300ms", 1)
		e.writeFile("smsmilter.yaml", cfg)
		start := time.Now()
		r := e.run("domain", "verify", "slow.example")
		check(t, "verify", r, 1, "not verified", "DNS lookup failed", "timeout", "dns.resolver")
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("verify took %v with dns.timeout 300ms", d)
		}
		if s := e.domainState("slow.example"); s != "not verified" {
			t.Errorf("list shows %q", s)
		}
	})

	t.Run("no such rule", func(t *testing.T) {
		e.t = t
		e.dns.TXT("unregistered.example", "smsmilter-verification="+strings.Repeat("a", 32))
		check(t, "verify", e.run("domain", "verify", "unregistered.example"), 1, "no domain rule for unregistered.example", "smsmilter domain add unregistered.example")
		check(t, "bad name", e.run("domain", "verify", "not_a domain"), 2, "is not a domain name")
		check(t, "no name", e.run("domain", "verify"), 2, "give exactly one DOMAIN")
	})
}
