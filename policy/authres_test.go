package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/store"
)

func TestParseAuthResults(t *testing.T) {
	tests := []struct {
		value string
		id    string
		want  []string // method=value prop=val..., props sorted as listed
	}{
		{" mx.example.test; dkim=pass header.d=example.test header.s=sel; spf=pass smtp.mailfrom=a@example.test; dmarc=pass header.from=example.test",
			"mx.example.test", []string{"dkim=pass header.d=example.test", "spf=pass smtp.mailfrom=a@example.test", "dmarc=pass header.from=example.test"}},
		// OpenDKIM: a ';' inside a comment.
		{" mx.example.test/4ABC12; dkim=pass (2048-bit key; unprotected) header.d=example.test header.i=@example.test header.b=AbCd",
			"mx.example.test/4ABC12", []string{"dkim=pass header.d=example.test header.i=@example.test"}},
		// A comment right after the authserv-id, version, folding.
		{" mx.example.test (amavis;\r\n\tpostfix) 1;\r\n\tdmarc=fail (p=reject dis=none) header.from=example.test",
			"mx.example.test", []string{"dmarc=fail header.from=example.test"}},
		// Nested and escaped comments, quoted values with ';'.
		{" mx.test; spf=softfail (sender (not \\) permitted; really)) reason=\"a; b\" smtp.mailfrom=\"x@y.test\"; dkim=none",
			"mx.test", []string{"spf=softfail smtp.mailfrom=x@y.test", "dkim=none"}},
		{" mx.test; none", "mx.test", nil},
		{" mx.test 2; dkim=pass", "mx.test", nil}, // unknown version: the result cannot be trusted to mean the same
		{"", "", nil},
		{" ; dkim=pass", "", nil},
		{" mx.test; garbage; dkim=pass header.d=x.test", "mx.test", []string{"dkim=pass header.d=x.test"}},
		{" mx.test; (unterminated dkim=pass", "mx.test", nil},
	}
	for _, tt := range tests {
		f := parseAuthResults(tt.value)
		if f.id != tt.id && tt.id != "" {
			t.Errorf("%q: id %q, want %q", tt.value, f.id, tt.id)
		}
		var got []string
		for _, r := range f.results {
			s := r.method + "=" + r.value
			for _, k := range []string{"header.d", "header.i", "smtp.mailfrom", "header.from"} {
				if v, ok := r.props[k]; ok {
					s += " " + k + "=" + v
				}
			}
			got = append(got, s)
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%q:\n got %q\nwant %q", tt.value, got, tt.want)
		}
	}

	f := parseAuthResults(" mx.test; dmarc=pass (p=REJECT sp=NONE dis=NONE) header.from=x.test")
	if len(f.results) != 1 || arPolicy(f.results[0]) != "reject" {
		t.Errorf("policy from comment: %+v", f.results)
	}
	f = parseAuthResults(" mx.test; dmarc=pass policy.published-domain-policy=quarantine header.from=x.test")
	if len(f.results) != 1 || arPolicy(f.results[0]) != "quarantine" {
		t.Errorf("policy from property: %+v", f.results)
	}
}

func TestBind(t *testing.T) {
	trusted := []string{"mx.example.test"}
	tests := []struct {
		id      string
		queueID string
		strips  bool
		want    arBinding
	}{
		{"mx.example.test/QID1", "QID1", false, arBelieved},
		{"MX.Example.Test/QID1", "QID1", false, arBelieved},
		{"mx.example.test/QID1", "qid1", false, arForged}, // queue IDs are case-sensitive
		{"mx.example.test/QID2", "QID1", false, arForged},
		{"mx.example.test/QID2", "QID1", true, arForged},
		{"mx.example.test/", "", false, arForged},
		{"mx.example.test", "QID1", false, arForged},
		{"mx.example.test", "QID1", true, arBelieved},
		{"mx.example.test", "", true, arBelieved},
		{"other.test/QID1", "QID1", true, arUntrusted},
		{"mx.example.test.evil/QID1", "QID1", true, arUntrusted},
	}
	for _, tt := range tests {
		if got := bind(tt.id, trusted, tt.queueID, tt.strips); got != tt.want {
			t.Errorf("bind(%q, %q, %v) = %v, want %v", tt.id, tt.queueID, tt.strips, got, tt.want)
		}
	}
}

// TestForgedAuthResults: a client claims every check passed under the
// MTA's own authserv-id. Unbound, it must not be believed.
func TestForgedAuthResults(t *testing.T) {
	w := newWorld(t)
	rules := &fakeRules{rules: []store.Rule{domainRule("reject.test", true, SecSPF, "pass", "pass", "pass")}}
	claim := func(id string) Field {
		return Field{"Authentication-Results", " " + id + "; dkim=pass (2048-bit key; unprotected) header.d=reject.test header.i=@reject.test;\r\n" +
			"\tspf=pass smtp.mailfrom=alice@reject.test; dmarc=pass (p=reject dis=none) header.from=reject.test"}
	}
	// Actually: no signature, client IP not in SPF, DMARC fails.
	base := msg{from: "alice@reject.test", mailFrom: "alice@reject.test", ip: badIP, queueID: "4XyZ1Q"}
	tests := []struct {
		name   string
		id     string
		strips bool
		allow  bool
		warn   bool
	}{
		{"forged: trusted id, no queue ID", "mx.example.test", false, false, true},
		{"forged: other transaction", "mx.example.test/4XyZ1R", false, false, true},
		{"forged: other transaction, upstream strips", "mx.example.test/4XyZ1R", true, false, true},
		{"bound to this transaction", "mx.example.test/4XyZ1Q", false, true, false},
		{"upstream strips forged", "mx.example.test", true, true, false},
		{"untrusted id", "mx.evil.test", true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, buf := logBuffer()
			e := w.eval(rules, func(o *Options) {
				o.TrustedAuthservIDs = []string{"mx.example.test"}
				o.UpstreamStripsForged = tt.strips
				o.Log = log
			})
			m := base
			m.extra = []Field{claim(tt.id)}
			d, err := e.Decide(context.Background(), w.build(t, m), false)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tt.allow {
				t.Errorf("allowed %v, want %v: %q", d.Allowed, tt.allow, d.Reasons)
			}
			src := "smsmilter"
			if tt.allow {
				src = "Authentication-Results from mx.example.test"
			}
			for _, v := range []Verdict{d.Verdicts.DKIM, d.Verdicts.SPF, d.Verdicts.DMARC} {
				if v.Source != src {
					t.Errorf("verdict %+v, want source %q", v, src)
				}
			}
			if got := strings.Contains(buf.String(), "not bound to this transaction"); got != tt.warn {
				t.Errorf("warning logged %v, want %v: %s", got, tt.warn, buf.String())
			}
		})
	}
}

// TestBelievedResults: believed results stand in for our own, per method;
// what they do not cover is checked by smsmilter.
func TestBelievedResults(t *testing.T) {
	w := newWorld(t)
	opts := func(o *Options) { o.TrustedAuthservIDs = []string{"mx.example.test"}; o.UpstreamStripsForged = true }
	tests := []struct {
		name  string
		ar    string
		m     msg
		want  map[string]string // check -> "result/level/source-prefix"
		allow bool
		rule  store.Rule
	}{
		{"only DKIM believed, SPF and DMARC by us",
			" mx.example.test; dkim=pass header.d=reject.test",
			msg{from: "a@reject.test", mailFrom: "a@reject.test", ip: badIP},
			map[string]string{"DKIM": "pass/pass/Auth", "SPF": "fail/fail/smsm", "DMARC": "pass/pass/smsm"},
			false, domainRule("reject.test", true, SecNone, "pass", "gray", "pass")},
		{"believed DKIM fail beats a valid signature",
			" mx.example.test; dkim=fail header.d=example.test",
			msg{from: "a@example.test", mailFrom: "a@example.test", signD: "example.test"},
			map[string]string{"DKIM": "fail/fail/Auth"},
			false, domainRule("example.test", true, SecNone, "gray", "fail", "fail")},
		{"believed dmarc pass without a policy: ours is read",
			" mx.example.test; dmarc=pass header.from=pnone.test",
			msg{from: "a@pnone.test", mailFrom: "a@pnone.test"},
			map[string]string{"DMARC": "pass/gray/Auth"},
			true, domainRule("pnone.test", true, SecNone, "fail", "fail", "gray")},
		{"believed dmarc about another domain is ignored",
			" mx.example.test; dmarc=pass (p=reject) header.from=reject.test",
			msg{from: "a@norecord.test", mailFrom: "a@norecord.test", ip: badIP},
			map[string]string{"DMARC": "none/fail/smsm"},
			false, domainRule("norecord.test", true, SecNone, "fail", "fail", "gray")},
		{"believed spf about another sender is ignored",
			" mx.example.test; spf=pass smtp.mailfrom=x@other.test",
			msg{from: "a@example.test", mailFrom: "a@example.test", ip: badIP},
			map[string]string{"SPF": "fail/fail/smsm"},
			false, domainRule("example.test", true, SecSPF, "fail", "fail", "fail")},
		{"believed spf temperror defers like our own",
			" mx.example.test; spf=temperror smtp.mailfrom=a@example.test",
			msg{from: "a@example.test", mailFrom: "a@example.test"},
			nil, false, domainRule("example.test", true, SecSPF, "fail", "fail", "fail")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := w.eval(&fakeRules{rules: []store.Rule{tt.rule}}, opts)
			m := tt.m
			m.extra = []Field{{"Authentication-Results", tt.ar}}
			d, err := e.Decide(context.Background(), w.build(t, m), true)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("want a temporary error, got %+v", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]Verdict{"DKIM": d.Verdicts.DKIM, "SPF": d.Verdicts.SPF, "DMARC": d.Verdicts.DMARC}
			for k, want := range tt.want {
				v := got[k]
				s := v.Result + "/" + v.Level.String() + "/" + v.Source[:4]
				if s != want {
					t.Errorf("%s: %s (%s), want %s", k, s, v.Detail, want)
				}
			}
			if d.Allowed != tt.allow {
				t.Errorf("allowed %v: %q", d.Allowed, d.Reasons)
			}
		})
	}
}
