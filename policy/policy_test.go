package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/smtpreply"
	"github.com/smsmilter/smsmilter/internal/store"
)

var levels = []Level{Pass, Gray, Fail}

// TestVerdictTable has a row for every cell of the DESIGN §4 table: each
// input of each check against each threshold. The other two thresholds are
// fail and the security none, so only the check under test decides.
func TestVerdictTable(t *testing.T) {
	w := newWorld(t)
	type input struct {
		name       string
		m          msg
		wantResult string
		wantLevel  Level
	}
	checks := []struct {
		check  string
		inputs []input
	}{
		{"DKIM", []input{
			{"aligned valid signature", msg{from: "a@example.test", mailFrom: "a@example.test", signD: "example.test"}, "pass", Pass},
			{"relaxed alignment via organizational domain", msg{from: "a@sub.relaxed.test", signD: "relaxed.test"}, "pass", Pass},
			{"no signature", msg{from: "a@example.test"}, "none", Gray},
			{"only an unaligned valid signature", msg{from: "a@example.test", signD: "other.test"}, "pass", Gray},
			{"adkim=s: organizational domain is not aligned", msg{from: "a@sub.strict.test", signD: "strict.test"}, "pass", Gray},
			{"signature fails verification", msg{from: "a@example.test", signD: "example.test", tamper: true}, "fail", Fail},
			{"unaligned signature fails verification", msg{from: "a@example.test", signD: "other.test", tamper: true}, "fail", Fail},
		}},
		{"SPF", []input{
			{"pass", msg{from: "a@example.test", mailFrom: "x@example.test"}, "pass", Pass},
			{"none", msg{from: "a@example.test", mailFrom: "x@none.test"}, "none", Gray},
			{"none (NXDOMAIN)", msg{from: "a@example.test", mailFrom: "x@nxdomain.test"}, "none", Gray},
			{"neutral", msg{from: "a@example.test", mailFrom: "x@neutral.test"}, "neutral", Gray},
			{"fail", msg{from: "a@example.test", mailFrom: "x@example.test", ip: badIP}, "fail", Fail},
			{"softfail", msg{from: "a@example.test", mailFrom: "x@softfail.test"}, "softfail", Fail},
			{"permerror", msg{from: "a@example.test", mailFrom: "x@permerror.test"}, "permerror", Fail},
			{"null sender: postmaster@HELO", msg{from: "a@example.test", helo: "fail.test"}, "fail", Fail},
		}},
		{"DMARC", []input{
			{"pass under p=quarantine", msg{from: "a@quarantine.test", mailFrom: "x@quarantine.test"}, "pass", Pass},
			{"pass under p=reject", msg{from: "a@reject.test", mailFrom: "x@reject.test"}, "pass", Pass},
			{"pass by aligned DKIM via organizational record", msg{from: "a@sub.reject.test", mailFrom: "x@fail.test", signD: "reject.test"}, "pass", Pass},
			{"pass under p=none", msg{from: "a@pnone.test", mailFrom: "x@pnone.test"}, "pass", Gray},
			{"no record, SPF pass", msg{from: "a@norecord.test", mailFrom: "x@norecord.test"}, "none", Gray},
			{"no record, only unaligned DKIM pass", msg{from: "a@norecord.test", mailFrom: "x@fail.test", signD: "other.test"}, "none", Gray},
			{"p=none, SPF pass unaligned", msg{from: "a@pnone.test", mailFrom: "x@example.test"}, "fail", Gray},
			{"nothing passed, no record", msg{from: "a@norecord.test", mailFrom: "x@norecord.test", ip: badIP}, "none", Fail},
			{"nothing passed, p=none", msg{from: "a@pnone.test", mailFrom: "x@pnone.test", ip: badIP}, "fail", Fail},
			{"p=reject, only unaligned SPF pass", msg{from: "a@reject.test", mailFrom: "x@example.test"}, "fail", Fail},
		}},
	}
	for _, c := range checks {
		for _, in := range c.inputs {
			for _, th := range levels {
				name := fmt.Sprintf("%s/%s/threshold_%s", c.check, in.name, th)
				t.Run(name, func(t *testing.T) {
					m := w.build(t, in.m)
					from, _ := fromAddress(m.Header)
					r := addrRule(from, SecNone, "fail", "fail", "fail")
					switch c.check {
					case "DKIM":
						r.DKIM = th.String()
					case "SPF":
						r.SPF = th.String()
					case "DMARC":
						r.DMARC = th.String()
					}
					e := w.eval(&fakeRules{rules: []store.Rule{r}})
					d, err := e.Decide(context.Background(), m, false)
					if err != nil {
						t.Fatal(err)
					}
					want := in.wantLevel >= th
					if d.Allowed != want {
						t.Errorf("allowed %v, want %v (reasons %q)", d.Allowed, want, d.Reasons)
					}
					d, err = e.Decide(context.Background(), m, true)
					if err != nil {
						t.Fatal(err)
					}
					v := map[string]Verdict{"DKIM": d.Verdicts.DKIM, "SPF": d.Verdicts.SPF, "DMARC": d.Verdicts.DMARC}[c.check]
					if v.Result != in.wantResult || v.Level != in.wantLevel || v.Source != "smsmilter" {
						t.Errorf("verdict %+v, want %s/%s", v, in.wantResult, in.wantLevel)
					}
					if want && d.Err() != nil || !want && d.Err() == nil {
						t.Errorf("Err() = %v with Allowed %v", d.Err(), d.Allowed)
					}
				})
			}
		}
	}
}

func TestSecurityTypes(t *testing.T) {
	w := newWorld(t)
	th := func(r store.Rule) store.Rule { r.DKIM, r.SPF, r.DMARC = "fail", "fail", "fail"; return r }
	tests := []struct {
		name  string
		rule  store.Rule
		m     msg
		allow bool
	}{
		{"spf pass", th(domainRule("example.test", true, SecSPF, "", "", "")), msg{from: "a@example.test", mailFrom: "a@example.test"}, true},
		{"spf fail", th(domainRule("example.test", true, SecSPF, "", "", "")), msg{from: "a@example.test", mailFrom: "a@example.test", ip: badIP}, false},
		{"spf softfail", th(domainRule("example.test", true, SecSPF, "", "", "")), msg{from: "a@example.test", mailFrom: "a@softfail.test"}, false},
		{"spf none", th(domainRule("example.test", true, SecSPF, "", "", "")), msg{from: "a@example.test", mailFrom: "a@none.test"}, false},
		{"spf is the default", th(domainRule("example.test", true, "", "", "", "")), msg{from: "a@example.test", mailFrom: "a@example.test", ip: badIP}, false},
		{"google pass", th(domainRule("example.test", true, SecGoogle, "", "", "")), msg{from: "a@example.test", mailFrom: "a@example.test", ip: googleIP}, true},
		{"google fail", th(domainRule("example.test", true, SecGoogle, "", "", "")), msg{from: "a@example.test", mailFrom: "a@example.test", ip: goodIP}, false},
		{"office365 pass", th(domainRule("example.test", true, SecOffice365, "", "", "")), msg{from: "a@example.test", mailFrom: "a@example.test", ip: msIP}, true},
		{"office365 fail", th(domainRule("example.test", true, SecOffice365, "", "", "")), msg{from: "a@example.test", mailFrom: "a@example.test", ip: googleIP}, false},
		{"ip pass", func() store.Rule {
			r := th(domainRule("example.test", true, SecIP, "", "", ""))
			r.IPs = []string{"203.0.113.0/24", "192.0.2.8/29"}
			return r
		}(), msg{from: "a@example.test", ip: goodIP}, true},
		{"ip fail", func() store.Rule {
			r := th(domainRule("example.test", true, SecIP, "", "", ""))
			r.IPs = []string{"192.0.2.0/24"}
			return r
		}(), msg{from: "a@example.test", ip: badIP}, false},
		{"ip rule is its own list", ipRule("198.51.100.0/24", "", "", ""), msg{from: "a@example.test", ip: badIP}, true},
		{"auth address, login = address", th(addrRule("alice@example.test", SecAuth, "", "", "")), msg{from: "Alice <Alice@Example.test>", auth: "ALICE@example.test", ip: badIP}, true},
		{"auth address, login = local part", th(addrRule("alice@example.test", SecAuth, "", "", "")), msg{from: "alice@example.test", auth: "alice", ip: badIP}, true},
		{"auth address, other login", th(addrRule("alice@example.test", SecAuth, "", "", "")), msg{from: "alice@example.test", auth: "bob", ip: badIP}, false},
		{"auth address, other domain", th(addrRule("alice@example.test", SecAuth, "", "", "")), msg{from: "alice@example.test", auth: "alice@other.test", ip: badIP}, false},
		{"auth address, not authenticated", th(addrRule("alice@example.test", SecAuth, "", "", "")), msg{from: "alice@example.test", ip: badIP}, false},
		{"auth domain, any login", th(domainRule("example.test", true, SecAuth, "", "", "")), msg{from: "alice@example.test", auth: "bob", ip: badIP}, true},
		{"auth domain, not authenticated", th(domainRule("example.test", true, SecAuth, "", "", "")), msg{from: "alice@example.test", ip: badIP}, false},
		{"none", th(domainRule("example.test", true, SecNone, "", "", "")), msg{from: "a@example.test", ip: badIP}, true},
		{"none, thresholds still apply", domainRule("example.test", true, SecNone, "pass", "fail", "fail"), msg{from: "a@example.test", ip: badIP}, false},
		{"unknown security refuses", th(domainRule("example.test", true, "bogus", "", "", "")), msg{from: "a@example.test"}, false},
		{"bad threshold refuses", domainRule("example.test", true, SecNone, "maybe", "fail", "fail"), msg{from: "a@example.test"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := w.eval(&fakeRules{rules: []store.Rule{tt.rule}})
			d, err := e.Decide(context.Background(), w.build(t, tt.m), false)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tt.allow {
				t.Errorf("allowed %v, want %v; reasons %q", d.Allowed, tt.allow, d.Reasons)
			}
			if !tt.allow && len(d.Reasons) == 0 {
				t.Error("refused without a reason")
			}
		})
	}
}

func TestRulePrecedence(t *testing.T) {
	w := newWorld(t)
	none := func(r store.Rule) store.Rule {
		r.Security, r.DKIM, r.SPF, r.DMARC = SecNone, "fail", "fail", "fail"
		return r
	}
	failing := func(r store.Rule) store.Rule {
		r.Security, r.DKIM, r.SPF, r.DMARC = SecAuth, "fail", "fail", "fail"
		return r
	}
	tests := []struct {
		name     string
		rules    []store.Rule
		m        msg
		wantRule string // kind:pattern, "" = none
		allow    bool
	}{
		{"address beats domain",
			[]store.Rule{none(addrRule("alice@example.test", "", "", "", "")), failing(domainRule("example.test", true, "", "", "", ""))},
			msg{from: "Alice@Example.TEST"}, "address:alice@example.test", true},
		{"address matches the envelope sender",
			[]store.Rule{none(addrRule("bounce@other.test", "", "", "", "")), failing(domainRule("example.test", true, "", "", "", ""))},
			msg{from: "alice@example.test", mailFrom: "Bounce@other.test"}, "address:bounce@other.test", true},
		{"From address before envelope sender",
			[]store.Rule{failing(addrRule("bounce@other.test", "", "", "", "")), none(addrRule("alice@example.test", "", "", "", ""))},
			msg{from: "alice@example.test", mailFrom: "bounce@other.test"}, "address:alice@example.test", true},
		{"domain beats ip",
			[]store.Rule{none(domainRule("example.test", true, "", "", "", "")), failing(ipRule("192.0.2.0/24", "", "", ""))},
			msg{from: "alice@example.test"}, "domain:example.test", true},
		{"unverified domain is ignored",
			[]store.Rule{failing(domainRule("example.test", false, "", "", "", "")), ipRule("192.0.2.0/24", "", "", "")},
			msg{from: "alice@example.test"}, "ip:192.0.2.0/24", true},
		{"unverified domain alone: no rule",
			[]store.Rule{none(domainRule("example.test", false, "", "", "", ""))},
			msg{from: "alice@example.test"}, "", false},
		{"sub-domain not covered",
			[]store.Rule{none(domainRule("example.test", true, "", "", "", ""))},
			msg{from: "alice@sub.example.test"}, "", false},
		{"parent domain not covered",
			[]store.Rule{none(domainRule("sub.example.test", true, "", "", "", ""))},
			msg{from: "alice@example.test"}, "", false},
		{"envelope domain does not match a domain rule",
			[]store.Rule{none(domainRule("example.test", true, "", "", "", ""))},
			msg{from: "alice@other.test", mailFrom: "alice@example.test"}, "", false},
		{"no fall-through from a failing address rule",
			[]store.Rule{failing(addrRule("alice@example.test", "", "", "", "")), none(domainRule("example.test", true, "", "", "", "")), ipRule("192.0.2.0/24", "", "", "")},
			msg{from: "alice@example.test"}, "address:alice@example.test", false},
		{"no fall-through from a failing domain rule",
			[]store.Rule{failing(domainRule("example.test", true, "", "", "", "")), ipRule("192.0.2.0/24", "", "", "")},
			msg{from: "alice@example.test"}, "domain:example.test", false},
		{"most specific ip rule wins",
			[]store.Rule{ipRule("192.0.2.0/24", "pass", "fail", "fail"), ipRule("192.0.2.8/29", "", "", ""), ipRule("0.0.0.0/0", "pass", "fail", "fail")},
			msg{from: "alice@example.test"}, "ip:192.0.2.8/29", true},
		{"most specific ip rule refuses, no fall-through",
			[]store.Rule{ipRule("192.0.2.0/24", "", "", ""), ipRule("192.0.2.8/29", "pass", "fail", "fail")},
			msg{from: "alice@example.test"}, "ip:192.0.2.8/29", false},
		{"IPv4-mapped client address",
			[]store.Rule{ipRule("192.0.2.0/24", "", "", "")},
			msg{from: "alice@example.test", ip: netip.MustParseAddr("::ffff:192.0.2.10")}, "ip:192.0.2.0/24", true},
		{"IPv6 rule",
			[]store.Rule{ipRule("2001:db8::/32", "", "", "")},
			msg{from: "alice@example.test", ip: netip.MustParseAddr("2001:db8::5")}, "ip:2001:db8::/32", true},
		{"ip outside every rule",
			[]store.Rule{ipRule("203.0.113.0/24", "", "", "")},
			msg{from: "alice@example.test"}, "", false},
		{"ip rule thresholds default to fail",
			[]store.Rule{ipRule("192.0.2.0/24", "", "", "")},
			msg{from: "alice@example.test", signD: "example.test", tamper: true, mailFrom: "x@fail.test"}, "ip:192.0.2.0/24", true},
		{"domain rule thresholds default to gray",
			[]store.Rule{domainRule("example.test", true, SecNone, "", "", "")},
			msg{from: "alice@example.test", mailFrom: "alice@example.test", signD: "example.test", tamper: true}, "domain:example.test", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := w.eval(&fakeRules{rules: tt.rules})
			d, err := e.Decide(context.Background(), w.build(t, tt.m), false)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if d.Rule != nil {
				got = d.Rule.Kind + ":" + d.Rule.Pattern
			}
			if got != tt.wantRule {
				t.Errorf("rule %q, want %q", got, tt.wantRule)
			}
			if d.Allowed != tt.allow {
				t.Errorf("allowed %v, want %v; reasons %q", d.Allowed, tt.allow, d.Reasons)
			}
			if tt.wantRule == "" && !strings.Contains(strings.Join(d.Reasons, " "), "no rule authorizes") {
				t.Errorf("reasons %q", d.Reasons)
			}
		})
	}
}

func TestTemporaryErrors(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name    string
		rule    store.Rule
		m       msg
		want451 bool
		allow   bool
		checks  map[string]string // verdict results to expect with all=true
	}{
		{"security spf: SPF temperror defers",
			domainRule("example.test", true, SecSPF, "fail", "fail", "fail"),
			msg{from: "a@example.test", mailFrom: "a@servfail.test"}, true, false, nil},
		{"SPF threshold gray: defers",
			domainRule("example.test", true, SecNone, "fail", "gray", "fail"),
			msg{from: "a@example.test", mailFrom: "a@servfail.test"}, true, false, nil},
		{"SPF not needed: not run, allowed",
			domainRule("example.test", true, SecNone, "fail", "fail", "fail"),
			msg{from: "a@example.test", mailFrom: "a@servfail.test"}, false, true, map[string]string{"SPF": "temperror"}},
		{"DKIM key temperror with threshold gray: defers",
			domainRule("example.test", true, SecNone, "gray", "fail", "fail"),
			msg{from: "a@example.test", signD: "tempkey.test"}, true, false, nil},
		{"DKIM key temperror, not needed",
			domainRule("example.test", true, SecNone, "fail", "fail", "fail"),
			msg{from: "a@example.test", signD: "tempkey.test"}, false, true, map[string]string{"DKIM": "temperror"}},
		{"DMARC record temperror with threshold gray: defers",
			domainRule("dmtemp.test", true, SecNone, "fail", "fail", "gray"),
			msg{from: "a@dmtemp.test", mailFrom: "a@dmtemp.test"}, true, false, nil},
		{"DMARC record temperror with threshold fail",
			domainRule("dmtemp.test", true, SecNone, "fail", "fail", "fail"),
			msg{from: "a@dmtemp.test", mailFrom: "a@dmtemp.test"}, false, true, map[string]string{"DMARC": "temperror", "SPF": "pass"}},
		{"DMARC needs SPF; SPF temperror but aligned DKIM decides",
			domainRule("reject.test", true, SecNone, "fail", "fail", "pass"),
			msg{from: "a@reject.test", mailFrom: "a@servfail.test", signD: "reject.test"}, false, true, nil},
		{"google: temperror defers",
			domainRule("example.test", true, SecGoogle, "fail", "fail", "fail"),
			msg{from: "a@example.test", mailFrom: "a@example.test"}, true, false, nil},
		{"certain refusal stands despite a temporary error",
			domainRule("example.test", true, SecAuth, "fail", "pass", "fail"),
			msg{from: "a@example.test", mailFrom: "a@servfail.test"}, false, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.HasPrefix(tt.name, "google") {
				w.dns.Set("_spf.google.com", 1 /* ServFail */)
				defer w.dns.Set("_spf.google.com", 0)
			}
			e := w.eval(&fakeRules{rules: []store.Rule{tt.rule}})
			m := w.build(t, tt.m)
			before := w.dns.TotalQueries()
			d, err := e.Decide(context.Background(), m, false)
			if tt.want451 {
				se, ok := smtpreply.As(err)
				if !ok || se.Code != 451 || se.Enhanced != "4.7.0" || !strings.Contains(se.Text, "try again later") {
					t.Fatalf("got %v, %v; want 451 4.7.0", d, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tt.allow {
				t.Errorf("allowed %v, want %v; %q", d.Allowed, tt.allow, d.Reasons)
			}
			r := tt.rule
			if tt.allow && r.Security == SecNone && r.DKIM == "fail" && r.SPF == "fail" && r.DMARC == "fail" {
				if n := w.dns.TotalQueries() - before; n != 0 {
					t.Errorf("%d DNS queries for checks the rule does not need", n)
				}
			}
			if tt.checks != nil {
				d, err := e.Decide(context.Background(), m, true)
				if err != nil {
					t.Fatalf("all=true: %v", err)
				}
				got := map[string]string{"DKIM": d.Verdicts.DKIM.Result, "SPF": d.Verdicts.SPF.Result, "DMARC": d.Verdicts.DMARC.Result}
				for k, v := range tt.checks {
					if got[k] != v {
						t.Errorf("%s verdict %q, want %q", k, got[k], v)
					}
				}
				if d.Allowed != tt.allow {
					t.Errorf("all=true changed the decision: %v", d.Allowed)
				}
			}
		})
	}
}

func TestStoreFailure(t *testing.T) {
	w := newWorld(t)
	e := w.eval(&fakeRules{err: errors.New("disk I/O error")})
	_, err := e.Decide(context.Background(), w.build(t, msg{from: "a@example.test"}), false)
	se, ok := smtpreply.As(err)
	if !ok || se.Code != 451 || se.Enhanced != "4.3.0" {
		t.Fatalf("got %v", err)
	}
}

func TestFromProblems(t *testing.T) {
	w := newWorld(t)
	rules := &fakeRules{rules: []store.Rule{
		domainRule("example.test", true, SecNone, "fail", "fail", "fail"),
		ipRule("192.0.2.0/24", "", "", ""),
	}}
	tests := []struct {
		name   string
		header []Field
		reason string
	}{
		{"no From", nil, "no From: header"},
		{"two From fields", []Field{{"From", " a@example.test"}, {"From", " b@example.test"}}, "2 From: headers"},
		{"two addresses", []Field{{"From", " a@example.test, b@example.test"}}, "names 2 addresses"},
		{"empty", []Field{{"From", " "}}, "empty"},
		{"garbage", []Field{{"From", " <<<"}}, "cannot be parsed"},
		{"group with nobody", []Field{{"From", " undisclosed:;"}}, "no address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := w.build(t, msg{extra: tt.header})
			for _, all := range []bool{false, true} {
				d, err := w.eval(rules).Decide(context.Background(), m, all)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allowed || d.From != "" {
					t.Fatalf("allowed %v from %q", d.Allowed, d.From)
				}
				if !strings.Contains(d.Err().Error(), tt.reason) || !strings.HasPrefix(d.Err().Error(), "550 5.7.1 ") {
					t.Errorf("Err() = %q, want it to say %q", d.Err(), tt.reason)
				}
			}
		})
	}

	// Folded From with a display name works.
	m := w.build(t, msg{extra: []Field{{"From", " \"Alice\r\n Example\" <ALICE@example.TEST>"}}})
	d, err := w.eval(rules).Decide(context.Background(), m, false)
	if err != nil || !d.Allowed || d.From != "alice@example.test" {
		t.Fatalf("folded From: %+v %v", d, err)
	}
}

func TestErrAndExplain(t *testing.T) {
	w := newWorld(t)
	rules := &fakeRules{rules: []store.Rule{domainRule("example.test", true, SecSPF, "pass", "gray", "gray")}}
	d, err := w.eval(rules).Decide(context.Background(), w.build(t, msg{from: "Alice <alice@example.test>", mailFrom: "alice@example.test"}), false)
	if err != nil {
		t.Fatal(err)
	}
	want := "550 5.7.1 SMS refused for alice@example.test: DKIM gray is below the rule's threshold pass (rule domain:example.test)"
	if d.Err() == nil || d.Err().Error() != want {
		t.Errorf("Err() = %q\nwant     %q", d.Err(), want)
	}
	var b bytes.Buffer
	d.Explain(&b)
	for _, s := range []string{"From: alice@example.test", "DKIM:  none (level gray) by smsmilter", "SPF:   pass (level pass)",
		"DMARC: none (level gray)", "Rule: domain example.test (user u-example.test, security spf, thresholds dkim pass, spf gray, dmarc gray, verified)",
		"Security spf: ok", "Policy: refused", "DKIM gray is below the rule's threshold pass"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("Explain lacks %q:\n%s", s, b.String())
		}
	}

	// No rule: says so, with what was looked at.
	d, err = w.eval(&fakeRules{}).Decide(context.Background(), w.build(t, msg{from: "bob@nowhere.test", mailFrom: "bob@nowhere.test"}), true)
	if err != nil {
		t.Fatal(err)
	}
	if d.Rule != nil || d.Allowed || !strings.Contains(d.Err().Error(), "no rule authorizes this sender") {
		t.Errorf("no rule: %v", d.Err())
	}
	b.Reset()
	d.Explain(&b)
	if !strings.Contains(b.String(), "Rule: none matched") || !strings.Contains(b.String(), "SPF:   none") {
		t.Errorf("Explain:\n%s", b.String())
	}
}

func TestSenderAuthenticated(t *testing.T) {
	w := newWorld(t)
	rules := &fakeRules{rules: []store.Rule{domainRule("example.test", true, SecNone, "gray", "gray", "fail")}}
	tests := []struct {
		name string
		m    msg
		want bool
	}{
		{"SPF pass", msg{from: "a@example.test", mailFrom: "a@example.test", ip: goodIP}, true},
		{"aligned DKIM", msg{from: "a@example.test", mailFrom: "a@fail.test", signD: "example.test"}, true},
		{"unaligned DKIM only", msg{from: "a@example.test", mailFrom: "a@fail.test", signD: "other.test"}, false},
		{"null sender", msg{from: "a@example.test", helo: "example.test"}, false},
	}
	for _, tt := range tests {
		d, err := w.eval(rules).Decide(context.Background(), w.build(t, tt.m), false)
		if err != nil {
			t.Fatal(err)
		}
		if d.SenderAuthenticated != tt.want {
			t.Errorf("%s: SenderAuthenticated %v", tt.name, d.SenderAuthenticated)
		}
	}
}

func TestParseLevel(t *testing.T) {
	for _, l := range levels {
		got, err := ParseLevel(strings.ToUpper(l.String()))
		if err != nil || got != l {
			t.Errorf("%s: %v %v", l, got, err)
		}
	}
	if _, err := ParseLevel("maybe"); err == nil {
		t.Error("maybe parsed")
	}
	if !(Fail < Gray && Gray < Pass) {
		t.Error("order")
	}
}

// logBuffer captures slog output.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}
