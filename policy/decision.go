package policy

import (
	"fmt"
	"io"
	"strings"

	"github.com/smsmilter/smsmilter/internal/smtpreply"
	"github.com/smsmilter/smsmilter/internal/store"
)

// Verdict is the outcome of one check.
type Verdict struct {
	Result string // "pass", "fail", "softfail", "none", "temperror", ...; "" = not run
	Level  Level  // 0 when not run or temporary error
	Source string // "smsmilter" or "Authentication-Results from mx.example.com"
	Detail string // what was found, for a person
}

// Verdicts are the three checks.
type Verdicts struct{ DKIM, SPF, DMARC Verdict }

// SecurityResult is the outcome of the rule's security type.
type SecurityResult struct {
	Type   string // spf, google, office365, ip, auth, none
	OK     bool
	Temp   bool // a DNS temporary error: no answer
	Detail string
}

// Decision is what Decide found.
type Decision struct {
	Allowed bool
	Rule    *store.Rule // nil: no rule matched
	From    string      // From: address, lower-cased ("" if none or several)
	// Verdicts computed; those the rule did not need are empty (Result "")
	// unless Decide was called with all.
	Verdicts Verdicts
	// SenderAuthenticated: the envelope sender passed SPF, or the From
	// domain has an aligned valid DKIM signature, among the checks that
	// were run: notices may go to the sender (no backscatter).
	SenderAuthenticated bool
	Reasons             []string // why refused, for a person
	// Security is the rule's security check; Thresholds the rule's
	// DKIM, SPF and DMARC thresholds after defaults.
	Security   SecurityResult
	Thresholds [3]Level
}

// Err is nil if the message may be sent; else a 550 5.7.1 reply with a one
// line reason.
func (d *Decision) Err() error {
	if d.Allowed {
		return nil
	}
	var b strings.Builder
	b.WriteString("SMS refused")
	if d.From != "" {
		b.WriteString(" for " + d.From)
	}
	b.WriteString(": ")
	if len(d.Reasons) == 0 {
		b.WriteString("sender not authorized")
	} else {
		b.WriteString(strings.Join(d.Reasons, "; "))
	}
	if d.Rule != nil {
		fmt.Fprintf(&b, " (rule %s:%s)", d.Rule.Kind, d.Rule.Pattern)
	}
	return smtpreply.New(550, "5.7.1", "%s", b.String())
}

// Explain writes, for a person, each check's result, the rule that
// matched and the decision with its reasons.
func (d *Decision) Explain(w io.Writer) {
	fmt.Fprintf(w, "From: %s\n", orNone(d.From))
	for _, c := range []struct {
		name string
		v    Verdict
	}{{"DKIM", d.Verdicts.DKIM}, {"SPF", d.Verdicts.SPF}, {"DMARC", d.Verdicts.DMARC}} {
		if c.v.Result == "" {
			fmt.Fprintf(w, "%-6s not checked (the rule does not need it)\n", c.name+":")
			continue
		}
		level := c.v.Level.String()
		if c.v.Level == 0 {
			level = "none (could not be checked)"
		}
		fmt.Fprintf(w, "%-6s %s (level %s) by %s", c.name+":", c.v.Result, level, c.v.Source)
		if c.v.Detail != "" {
			fmt.Fprintf(w, ": %s", c.v.Detail)
		}
		fmt.Fprintln(w)
	}
	if r := d.Rule; r != nil {
		state := ""
		if r.Kind == store.KindDomain && r.Verified {
			state = ", verified"
		}
		fmt.Fprintf(w, "Rule: %s %s (user %s, security %s, thresholds dkim %s, spf %s, dmarc %s%s)\n",
			r.Kind, r.Pattern, r.User, d.Security.Type, d.Thresholds[0], d.Thresholds[1], d.Thresholds[2], state)
		if d.Security.Detail != "" {
			res := "ok"
			switch {
			case d.Security.Temp:
				res = "could not be checked"
			case !d.Security.OK:
				res = "failed"
			}
			fmt.Fprintf(w, "Security %s: %s: %s\n", d.Security.Type, res, d.Security.Detail)
		}
	} else {
		fmt.Fprintln(w, "Rule: none matched")
	}
	if d.Allowed {
		fmt.Fprintln(w, "Policy: allowed")
	} else {
		fmt.Fprintln(w, "Policy: refused")
		for _, r := range d.Reasons {
			fmt.Fprintf(w, "  - %s\n", r)
		}
	}
	if d.SenderAuthenticated {
		fmt.Fprintln(w, "Sender authenticated: yes (SPF or aligned DKIM passed)")
	} else {
		fmt.Fprintln(w, "Sender authenticated: no")
	}
}
