package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/smtpreply"
	"github.com/smsmilter/smsmilter/internal/store"
)

// FuzzAuthResults feeds arbitrary Authentication-Results values through
// the parser and a whole decision: nothing may panic, and a decision is
// either an answer or a 451.
func FuzzAuthResults(f *testing.F) {
	f.Add(" mx.example.test/Q1; dkim=pass (2048-bit key; unprotected) header.d=reject.test; spf=pass smtp.mailfrom=a@reject.test; dmarc=pass (p=reject) header.from=reject.test", "Q1")
	f.Add(" mx.example.test; dmarc=fail policy.published-domain-policy=reject header.from=reject.test", "")
	f.Add(" mx.example.test (c;(n)\\) \"q;\"; spf=temperror", "Q")
	f.Add("(((", "")
	w := newWorld(f)
	rules := &fakeRules{rules: []store.Rule{domainRule("reject.test", true, SecNone, "gray", "gray", "gray")}}
	e := w.eval(rules, func(o *Options) { o.TrustedAuthservIDs = []string{"mx.example.test"} })
	f.Fuzz(func(t *testing.T, value, queueID string) {
		af := parseAuthResults(value)
		for _, r := range af.results {
			arPolicy(r)
		}
		for _, strips := range []bool{false, true} {
			b := collectAR([]Field{{"Authentication-Results", value}}, []string{"mx.example.test"}, queueID, strips, nil)
			_ = b
		}
		m := w.build(t, msg{from: "a@reject.test", mailFrom: "a@reject.test", queueID: queueID,
			extra: []Field{{"Authentication-Results", value}}})
		d, err := e.Decide(context.Background(), m, true)
		checkDecision(t, d, err)
	})
}

// FuzzFrom feeds arbitrary From: values (and envelope senders) through
// rule matching.
func FuzzFrom(f *testing.F) {
	f.Add(" Alice <alice@example.test>", "alice@example.test")
	f.Add(" \"a, b\" <a@example.test>, b@example.test", "")
	f.Add(" =?utf-8?q?J=C3=B6rg?= <jorg@example.test>", "<>")
	f.Add(" undisclosed-recipients:;", "x@y")
	f.Add(" a@example.test\r\n (comment)", "")
	w := newWorld(f)
	rules := &fakeRules{rules: []store.Rule{
		domainRule("example.test", true, SecNone, "fail", "fail", "fail"),
		addrRule("x@y", SecNone, "fail", "fail", "fail"),
	}}
	e := w.eval(rules)
	f.Fuzz(func(t *testing.T, from, mailFrom string) {
		addr, err := fromAddress([]Field{{"From", from}})
		if err == nil {
			if addr != strings.ToLower(addr) || domainOf(addr) == "" {
				t.Fatalf("From %q gave %q", from, addr)
			}
		}
		m := &Message{ClientIP: badIP, MailFrom: mailFrom, Header: []Field{{"From", from}}, Body: []byte("hi\r\n")}
		d, derr := e.Decide(context.Background(), m, false)
		checkDecision(t, d, derr)
		if derr == nil && err == nil && d.From != addr {
			t.Fatalf("Decision.From %q, fromAddress %q", d.From, addr)
		}
		if derr == nil && err != nil && d.Allowed {
			t.Fatalf("allowed without a From: %q", from)
		}
	})
}

func checkDecision(t *testing.T, d *Decision, err error) {
	t.Helper()
	if err != nil {
		se, ok := smtpreply.As(err)
		if !ok || se.Code != 451 {
			t.Fatalf("error %v is not a 451", err)
		}
		return
	}
	if d.Allowed && d.Rule == nil {
		t.Fatal("allowed without a rule")
	}
	if d.Allowed != (d.Err() == nil) {
		t.Fatal("Allowed and Err disagree")
	}
	if !d.Allowed && strings.ContainsAny(d.Err().Error(), "\r\n") {
		t.Fatalf("multi-line reply %q", d.Err())
	}
	var b strings.Builder
	d.Explain(&b)
}
