package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// maxDKIMSignatures bounds the signatures verified per message: each costs
// a DNS lookup and an RSA operation, and a sender controls how many there are.
const maxDKIMSignatures = 8

const sourceSelf = "smsmilter"

// run holds the checks of one Decide call. Each check runs at most once,
// when first needed; nothing outlives the call.
type run struct {
	e          *Evaluator
	ctx        context.Context
	m          *Message
	mailFrom   string // envelope sender without <>, "" for the null sender
	from       string // From: address, "" if there is no single one
	fromDomain string
	ar         believed

	spfDone bool
	spf     spfOutcome

	dkimDone bool
	sigs     []sigOutcome
	dkimSrc  string
	dkimNote string // a problem with the message as a whole

	recDone bool
	rec     recOutcome

	dkimV, dmarcV       *Verdict
	dkimTemp, dmarcTemp bool
}

// ---- SPF ----

type spfOutcome struct {
	result string // spf.Result values
	domain string // the identity checked: envelope sender domain, or HELO for the null sender
	source string
	detail string
}

func (o spfOutcome) temp() bool { return o.result == string(spf.TempError) }

func spfLevel(result string) Level {
	switch result {
	case "pass":
		return Pass
	case "none", "neutral":
		return Gray
	case "temperror":
		return 0
	}
	// fail, softfail, permerror, and anything a foreign header invents.
	return Fail
}

// spfSender is the identity SPF checks: the envelope sender, or
// postmaster@HELO for the null sender (RFC 7208 §2.4).
func (r *run) spfSender() string {
	if r.mailFrom != "" {
		return r.mailFrom
	}
	return "postmaster@" + r.m.Helo
}

func (r *run) checkSPF() spfOutcome {
	if r.spfDone {
		return r.spf
	}
	r.spfDone = true
	sender := r.spfSender()
	domain := domainOf(sender)
	if o, ok := r.believedSPF(domain); ok {
		r.spf = o
		return o
	}
	res, err := r.e.spfCheck(r.ctx, r.m.ClientIP, r.m.Helo, sender)
	o := spfOutcome{result: string(res), domain: domain, source: sourceSelf}
	o.detail = fmt.Sprintf("SPF of %s for client %s: %s", orNone(domain), r.m.ClientIP, res)
	// The library's error explains permerror and temperror; on other
	// results it only names the mechanism that matched.
	if err != nil && (res == spf.PermError || res == spf.TempError) {
		o.detail += " (" + err.Error() + ")"
	}
	r.spf = o
	return o
}

// believedSPF uses a believed spf result about the same identity.
func (r *run) believedSPF(domain string) (spfOutcome, bool) {
	for _, a := range r.ar.spf {
		id := a.props["smtp.mailfrom"]
		if id == "" && r.mailFrom == "" {
			id = a.props["smtp.helo"]
		}
		if id != "" {
			d := id
			if strings.Contains(d, "@") {
				d = domainOf(strings.Trim(d, "<>"))
			}
			if !strings.EqualFold(strings.TrimSuffix(d, "."), domain) {
				continue // about another identity
			}
		}
		v := a.value
		switch v {
		case "hardfail":
			v = "fail"
		case "policy":
			v = "fail"
		}
		return spfOutcome{
			result: v, domain: domain,
			source: "Authentication-Results from " + r.ar.spfID,
			detail: fmt.Sprintf("spf=%s smtp.mailfrom=%s", a.value, orNone(id)),
		}, true
	}
	return spfOutcome{}, false
}

// spfCheck runs blitiri spf through our resolver.
func (e *Evaluator) spfCheck(ctx context.Context, ip netip.Addr, helo, sender string) (spf.Result, error) {
	if !ip.IsValid() {
		return spf.PermError, errors.New("no client IP")
	}
	return spf.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), helo, sender,
		spf.WithResolver(e.res), spf.WithContext(ctx))
}

// ---- DKIM ----

type sigState int

const (
	sigValid sigState = iota
	sigFail
	sigTemp
)

type sigOutcome struct {
	domain string // d=
	state  sigState
	result string // pass, fail, permerror, temperror, neutral...
	detail string
}

// verifyDKIM collects the DKIM signatures' outcomes, from believed headers
// or by verifying the raw message.
func (r *run) verifyDKIM() {
	if r.dkimDone {
		return
	}
	r.dkimDone = true
	if len(r.ar.dkim) > 0 {
		r.dkimSrc = "Authentication-Results from " + r.ar.dkimID
		for _, a := range r.ar.dkim {
			d := a.props["header.d"]
			if d == "" {
				d = domainOf(a.props["header.i"])
			}
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			o := sigOutcome{domain: d, result: a.value, detail: fmt.Sprintf("dkim=%s header.d=%s", a.value, orNone(d))}
			switch a.value {
			case "none":
				continue // no signature
			case "pass":
				o.state = sigValid
			case "temperror":
				o.state = sigTemp
			default:
				o.state = sigFail
			}
			r.sigs = append(r.sigs, o)
		}
		return
	}
	r.dkimSrc = sourceSelf
	opts := &dkim.VerifyOptions{
		MaxVerifications: maxDKIMSignatures,
		LookupTXT: func(name string) ([]string, error) {
			// go-msgauth tells temporary from permanent failures by
			// the bare *net.DNSError the resolver returns.
			return r.e.res.LookupTXT(r.ctx, name)
		},
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(r.m.Raw()), opts)
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		if hasField(r.m.Header, "DKIM-Signature") {
			r.sigs = append(r.sigs, sigOutcome{state: sigFail, result: "permerror", detail: "cannot verify: " + err.Error()})
		} else {
			r.dkimNote = "message not readable: " + err.Error()
		}
		return
	}
	for _, v := range vs {
		o := sigOutcome{domain: strings.ToLower(strings.TrimSuffix(v.Domain, "."))}
		switch {
		case v.Err == nil:
			o.state, o.result = sigValid, "pass"
			o.detail = "valid signature d=" + o.domain
		case dkim.IsTempFail(v.Err):
			o.state, o.result = sigTemp, "temperror"
			o.detail = fmt.Sprintf("d=%s: %v", orNone(o.domain), v.Err)
		case dkim.IsPermFail(v.Err):
			o.state, o.result = sigFail, "permerror"
			o.detail = fmt.Sprintf("d=%s: %v", orNone(o.domain), v.Err)
		default:
			o.state, o.result = sigFail, "fail"
			o.detail = fmt.Sprintf("d=%s: %v", orNone(o.domain), v.Err)
		}
		r.sigs = append(r.sigs, o)
	}
}

// alignment of a DKIM d= with the From domain: aligned, not, or unknown
// because the DMARC record (adkim=) could not be fetched.
type alignment int

const (
	unaligned alignment = iota
	aligned
	alignUnknown
)

func (r *run) dkimAligned(d string) alignment {
	if r.fromDomain == "" || d == "" {
		return unaligned
	}
	if d == r.fromDomain {
		return aligned
	}
	if orgDomain(d) != orgDomain(r.fromDomain) {
		return unaligned
	}
	// Relaxed alignment holds; strict only if the domain asks for it.
	rec := r.dmarcRecord()
	if rec.temp {
		return alignUnknown
	}
	if rec.rec != nil && rec.rec.DKIMAlignment == dmarc.AlignmentStrict {
		return unaligned
	}
	return aligned
}

// dkimVerdict applies the DESIGN §4 DKIM row: PASS a valid aligned
// signature; FAIL a signature that fails verification; GRAY no signature or
// only unaligned valid ones. A signature whose key could not be fetched
// (or whose alignment could not be told) leaves the verdict open unless an
// aligned valid one already decides it.
func (r *run) dkimVerdict() (Verdict, bool) {
	if r.dkimV != nil {
		return *r.dkimV, r.dkimTemp
	}
	r.verifyDKIM()
	v := Verdict{Source: r.dkimSrc}
	var temp, failed, unal []string
	var firstFail *sigOutcome
	for i, s := range r.sigs {
		switch s.state {
		case sigTemp:
			temp = append(temp, s.detail)
		case sigFail:
			failed = append(failed, s.detail)
			if firstFail == nil {
				firstFail = &r.sigs[i]
			}
		case sigValid:
			switch r.dkimAligned(s.domain) {
			case aligned:
				v.Result, v.Level = "pass", Pass
				v.Detail = fmt.Sprintf("%s, aligned with From domain %s", s.detail, r.fromDomain)
				r.dkimV = &v
				return v, false
			case alignUnknown:
				temp = append(temp, s.detail+", alignment unknown (DMARC record unavailable)")
			default:
				unal = append(unal, s.domain)
			}
		}
	}
	isTemp := false
	switch {
	case len(temp) > 0:
		v.Result, v.Level, isTemp = "temperror", 0, true
		v.Detail = strings.Join(temp, "; ")
	case firstFail != nil:
		v.Result, v.Level = firstFail.result, Fail
		v.Detail = strings.Join(failed, "; ")
	case len(unal) > 0:
		v.Result, v.Level = "pass", Gray
		v.Detail = fmt.Sprintf("only signatures not aligned with From domain %s (d=%s)", orNone(r.fromDomain), strings.Join(unal, ", d="))
	default:
		v.Result, v.Level = "none", Gray
		v.Detail = "no DKIM signature"
		if r.dkimNote != "" {
			v.Detail += " (" + r.dkimNote + ")"
		}
	}
	r.dkimV, r.dkimTemp = &v, isTemp
	return v, isTemp
}

// dkimAnyValid reports whether some signature verified (aligned or not).
func (r *run) dkimAnyValid() bool {
	r.verifyDKIM()
	for _, s := range r.sigs {
		if s.state == sigValid {
			return true
		}
	}
	return false
}

// ---- DMARC ----

type recOutcome struct {
	rec    *dmarc.Record // nil: no record
	at     string        // the domain whose _dmarc record it is
	policy dmarc.Policy  // effective for the From domain (sp= for sub-domains)
	temp   bool
	detail string
}

// dmarcRecord looks up the From domain's DMARC record, falling back to the
// organizational domain (RFC 7489 §6.6.3; go-msgauth does no fallback).
func (r *run) dmarcRecord() recOutcome {
	if r.recDone {
		return r.rec
	}
	r.recDone = true
	if r.fromDomain == "" {
		r.rec = recOutcome{detail: "no From: domain"}
		return r.rec
	}
	lookup := func(d string) (*dmarc.Record, error) {
		return dmarc.LookupWithOptions(d, &dmarc.LookupOptions{LookupTXT: func(name string) ([]string, error) {
			return r.e.res.LookupTXT(r.ctx, name)
		}})
	}
	try := []string{r.fromDomain}
	if org := orgDomain(r.fromDomain); org != r.fromDomain {
		try = append(try, org)
	}
	for _, d := range try {
		rec, err := lookup(d)
		switch {
		case err == nil:
			o := recOutcome{rec: rec, at: d, policy: rec.Policy}
			if d != r.fromDomain && rec.SubdomainPolicy != "" {
				o.policy = rec.SubdomainPolicy
			}
			o.detail = fmt.Sprintf("record at _dmarc.%s, p=%s", d, o.policy)
			r.rec = o
			return o
		case dmarc.IsTempFail(err):
			r.rec = recOutcome{temp: true, detail: fmt.Sprintf("_dmarc.%s: %v", d, err)}
			return r.rec
		case errors.Is(err, dmarc.ErrNoPolicy):
			continue
		default:
			// A malformed record counts as none (RFC 7489 §6.6.3).
			r.rec = recOutcome{detail: fmt.Sprintf("unusable record at _dmarc.%s: %v", d, err)}
			return r.rec
		}
	}
	r.rec = recOutcome{detail: "no DMARC record for " + r.fromDomain}
	return r.rec
}

// dmarcVerdict applies the DESIGN §4 DMARC row: PASS dmarc=pass under
// p=quarantine or p=reject; GRAY SPF or DKIM passed (aligned or not) and
// the domain has no DMARC record or p=none; FAIL everything else.
func (r *run) dmarcVerdict() (Verdict, bool) {
	if r.dmarcV != nil {
		return *r.dmarcV, r.dmarcTemp
	}
	v, temp := r.computeDMARC()
	r.dmarcV, r.dmarcTemp = &v, temp
	return v, temp
}

func (r *run) computeDMARC() (Verdict, bool) {
	if r.fromDomain == "" {
		return Verdict{Result: "permerror", Level: Fail, Source: sourceSelf, Detail: "no single From: domain"}, false
	}
	result, policy, src, detail, temp := r.dmarcResult()
	if temp {
		return Verdict{Result: "temperror", Source: src, Detail: strings.Join(detail, "; ")}, true
	}
	v := Verdict{Result: result, Source: src}
	enforcing := policy == dmarc.PolicyQuarantine || policy == dmarc.PolicyReject
	switch {
	case result == "pass" && enforcing:
		v.Level = Pass
	case !enforcing:
		// No record, an unusable one, or p=none: GRAY when SPF or DKIM
		// passed at all.
		passed, known := r.anyPassed()
		switch {
		case passed:
			v.Level = Gray
			detail = append(detail, "SPF or DKIM passed, but no enforcing DMARC policy")
		case !known:
			detail = append(detail, "SPF or DKIM could not be checked")
			return Verdict{Result: "temperror", Source: src, Detail: strings.Join(detail, "; ")}, true
		default:
			v.Level = Fail
			detail = append(detail, "neither SPF nor DKIM passed")
		}
	default:
		v.Level = Fail
	}
	v.Detail = strings.Join(detail, "; ")
	return v, false
}

// anyPassed reports whether SPF or some DKIM signature passed, aligned or
// not, and whether that is known (no temporary error left it open).
func (r *run) anyPassed() (passed, known bool) {
	if r.dkimAnyValid() {
		return true, true
	}
	sp := r.checkSPF()
	if sp.result == "pass" {
		return true, true
	}
	return false, !sp.temp() && !r.dkimHasTemp()
}

// dmarcResult is the DMARC result proper (pass/fail/none/...) and the
// policy that applies to the From domain, from a believed header or our own
// record lookup and alignment check.
func (r *run) dmarcResult() (result string, policy dmarc.Policy, src string, detail []string, temp bool) {
	if a, ok := r.believedDMARC(); ok {
		src = "Authentication-Results from " + r.ar.dmarcID
		result = a.value
		detail = append(detail, "dmarc="+a.value)
		switch result {
		case "pass", "fail":
			if policy = arPolicy(a); policy != "" {
				detail = append(detail, "p="+string(policy))
				return result, policy, src, detail, false
			}
			// The header does not say which policy applies: read it.
			rec := r.dmarcRecord()
			detail = append(detail, rec.detail)
			if rec.temp {
				return "", "", src, detail, true
			}
			return result, rec.policy, src, detail, false
		case "temperror":
			return "", "", src, detail, true
		case "none", "permerror":
			return result, "", src, detail, false
		default:
			return "fail", arPolicy(a), src, detail, false
		}
	}

	src = sourceSelf
	rec := r.dmarcRecord()
	detail = append(detail, rec.detail)
	if rec.temp {
		return "", "", src, detail, true
	}
	if rec.rec == nil {
		return "none", "", src, detail, false
	}
	sp := r.checkSPF()
	r.verifyDKIM()
	spfAl := sp.result == "pass" && aligns(sp.domain, r.fromDomain, rec.rec.SPFAlignment)
	dkimAl, dkimUnknown := "", false
	for _, s := range r.sigs {
		switch {
		case s.state == sigValid && dkimAl == "" && aligns(s.domain, r.fromDomain, rec.rec.DKIMAlignment):
			dkimAl = s.domain
		case s.state == sigTemp:
			dkimUnknown = true
		}
	}
	switch {
	case spfAl || dkimAl != "":
		if spfAl {
			detail = append(detail, "SPF pass aligned ("+sp.domain+")")
		}
		if dkimAl != "" {
			detail = append(detail, "DKIM pass aligned (d="+dkimAl+")")
		}
		return "pass", rec.policy, src, detail, false
	case sp.temp() || dkimUnknown:
		detail = append(detail, "SPF or DKIM could not be checked")
		return "", "", src, detail, true
	}
	detail = append(detail, "neither SPF nor DKIM pass is aligned with "+r.fromDomain)
	return "fail", rec.policy, src, detail, false
}

func (r *run) dkimHasTemp() bool {
	for _, s := range r.sigs {
		if s.state == sigTemp {
			return true
		}
	}
	return false
}

// believedDMARC returns a believed dmarc result about the From domain.
func (r *run) believedDMARC() (arResult, bool) {
	for _, a := range r.ar.dmarc {
		if f := a.props["header.from"]; f != "" {
			if strings.Contains(f, "@") {
				f = domainOf(f)
			}
			if !strings.EqualFold(strings.TrimSuffix(f, "."), r.fromDomain) {
				continue
			}
		}
		return a, true
	}
	return arResult{}, false
}

var arPolicyRe = regexp.MustCompile(`(?i)(?:^|[\s(])(?:p|policy)=(none|quarantine|reject)\b`)

// arPolicy finds the published policy in a dmarc result: a property
// (policy.published-domain-policy, rspamd's policy.dmarc) or the comment
// OpenDMARC, Gmail and others write, "(p=reject dis=none)".
func arPolicy(a arResult) dmarc.Policy {
	for _, k := range []string{"policy.published-domain-policy", "policy.dmarc"} {
		if p := strings.ToLower(a.props[k]); p == "none" || p == "quarantine" || p == "reject" {
			return dmarc.Policy(p)
		}
	}
	for _, c := range a.comments {
		if m := arPolicyRe.FindStringSubmatch(c); m != nil {
			return dmarc.Policy(strings.ToLower(m[1]))
		}
	}
	return ""
}

// aligns reports DMARC identifier alignment (RFC 7489 §3.1): strict needs
// the same domain, relaxed the same organizational domain.
func aligns(d, from string, mode dmarc.AlignmentMode) bool {
	if d == "" || from == "" {
		return false
	}
	d, from = strings.ToLower(d), strings.ToLower(from)
	if d == from {
		return true
	}
	if mode == dmarc.AlignmentStrict {
		return false
	}
	return orgDomain(d) == orgDomain(from)
}

// orgDomain is the organizational domain (public suffix + 1 label).
func orgDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	o, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return o
}

func hasField(h []Field, name string) bool {
	for _, f := range h {
		if strings.EqualFold(strings.TrimSpace(f.Name), name) {
			return true
		}
	}
	return false
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
