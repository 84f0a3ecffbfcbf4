package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/smsmilter/smsmilter/internal/dnsresolver"
	"github.com/smsmilter/smsmilter/internal/smtpreply"
	"github.com/smsmilter/smsmilter/internal/store"
)

// Rules is the part of the registry the policy reads; store.Store
// satisfies it.
type Rules interface {
	// FindRule returns the rule of a kind with exactly this pattern, or an
	// error wrapping store.ErrNotFound.
	FindRule(ctx context.Context, kind, pattern string) (store.Rule, error)
	IPRules(ctx context.Context) ([]store.Rule, error)
}

// Options configure an Evaluator.
type Options struct {
	Resolver *dnsresolver.Resolver // nil: the system resolver
	// TrustedAuthservIDs are the authserv-ids of Authentication-Results
	// written by the MTA's own earlier milters (auth.trusted_authserv_ids).
	TrustedAuthservIDs []string
	// UpstreamStripsForged: the milter before us removes forged
	// Authentication-Results, so a bare trusted authserv-id is believed.
	UpstreamStripsForged bool
	Registry             Rules
	Log                  *slog.Logger // nil: discard
}

// Evaluator decides per message. It keeps no state between calls (rules
// are read from the registry each time, so edits by the CLI apply at once)
// and is safe for concurrent use.
type Evaluator struct {
	res            *dnsresolver.Resolver
	trusted        []string
	upstreamStrips bool
	rules          Rules
	log            *slog.Logger
}

// New returns an Evaluator.
func New(o Options) *Evaluator {
	e := &Evaluator{
		res:            o.Resolver,
		upstreamStrips: o.UpstreamStripsForged,
		rules:          o.Registry,
		log:            o.Log,
	}
	if e.res == nil {
		e.res = dnsresolver.New("", 0)
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	for _, id := range o.TrustedAuthservIDs {
		if id = strings.TrimSpace(id); id != "" {
			e.trusted = append(e.trusted, id)
		}
	}
	return e
}

// Security types (DESIGN §4).
const (
	SecSPF       = "spf"
	SecGoogle    = "google"
	SecOffice365 = "office365"
	SecIP        = "ip"
	SecAuth      = "auth"
	SecNone      = "none"
)

// The SPF records that say which client IPs are Google's and Microsoft's
// outbound mail servers.
const (
	googleSPF    = "_spf.google.com"
	office365SPF = "spf.protection.outlook.com"
)

// Decide finds the rule for m and checks it. It returns an error only when
// the answer cannot be given now: a DNS temporary error in a check the rule
// needs (451 4.7.0) or a store failure (451 4.3.0), both *smtpreply.Error.
// With all, every verdict is computed even when the rule does not need it
// (a temporary error there shows as "temperror", not as an error).
func (e *Evaluator) Decide(ctx context.Context, m *Message, all bool) (*Decision, error) {
	// MTAs differ in whether the milter sees <> around the envelope sender.
	r := &run{e: e, ctx: ctx, m: m, mailFrom: strings.Trim(strings.TrimSpace(m.MailFrom), "<>")}
	d := &Decision{}
	from, fromErr := fromAddress(m.Header)
	if fromErr == nil {
		r.from, r.fromDomain = from, domainOf(from)
		d.From = from
	}
	r.ar = collectAR(m.Header, e.trusted, m.QueueID, e.upstreamStrips, func(id string) {
		e.log.Warn("ignoring Authentication-Results not bound to this transaction; checking myself",
			"authserv_id", id, "queue_id", m.QueueID, "client_ip", m.ClientIP.String(), "from", from)
	})

	rule, err := e.findRule(ctx, r)
	if err != nil {
		return nil, smtpreply.Wrap(err, 451, "4.3.0", "store unavailable; try again later")
	}
	d.Rule = rule

	var pending []string // needed checks that hit a DNS temporary error
	var reasons []string
	if fromErr != nil {
		reasons = append(reasons, fromErr.Error())
	}

	if rule == nil {
		if fromErr == nil {
			reasons = append(reasons, fmt.Sprintf("no rule authorizes this sender (From %s, envelope sender %s, client IP %s)",
				from, orNull(r.mailFrom), m.ClientIP))
		}
	} else {
		p, perr := ruleParams(rule)
		d.Security.Type = p.security
		d.Thresholds = p.thresholds
		switch {
		case perr != nil:
			reasons = append(reasons, perr.Error())
		case fromErr != nil && !all:
			// Refused anyway: spare the DNS lookups.
		default:
			sec := e.security(r, rule, p.security)
			d.Security = sec
			switch {
			case sec.Temp:
				pending = append(pending, "security "+p.security)
			case !sec.OK:
				reasons = append(reasons, sec.Detail)
			}
			for _, c := range checkList() {
				th := p.thresholds[c.idx]
				if th <= Fail {
					continue // allows everything: not run unless all
				}
				v, temp := c.verdict(r)
				*c.slot(&d.Verdicts) = v
				switch {
				case temp:
					pending = append(pending, c.name)
				case v.Level < th:
					reasons = append(reasons, fmt.Sprintf("%s %s is below the rule's threshold %s", c.name, v.Level, th))
				}
			}
		}
	}

	if all {
		for _, c := range checkList() {
			if slot := c.slot(&d.Verdicts); slot.Result == "" {
				v, _ := c.verdict(r)
				*slot = v
			}
		}
	} else {
		// Verdicts computed on the way (SPF and DKIM as inputs of DMARC)
		// are shown too; nothing else is run.
		if r.spfDone && d.Verdicts.SPF.Result == "" {
			d.Verdicts.SPF = spfVerdict(r.spf)
		}
		if r.dkimDone && d.Verdicts.DKIM.Result == "" {
			d.Verdicts.DKIM, _ = r.dkimVerdict()
		}
	}

	d.SenderAuthenticated = (r.spfDone && r.spf.result == "pass" && r.mailFrom != "") ||
		(r.dkimV != nil && r.dkimV.Level == Pass)

	// A refusal that is already certain stands even if another needed
	// check could not be run: retrying could not change it.
	if len(reasons) == 0 && len(pending) > 0 {
		e.log.Info("DNS temporary error in a needed check; deferring", "checks", strings.Join(pending, ", "),
			"from", from, "client_ip", m.ClientIP.String(), "queue_id", m.QueueID)
		return nil, smtpreply.New(451, "4.7.0", "cannot check %s for %s now (DNS temporary error); try again later",
			strings.Join(pending, ", "), orNull(first(from, r.mailFrom)))
	}
	d.Reasons = reasons
	d.Allowed = rule != nil && len(reasons) == 0
	return d, nil
}

// check is one of the three thresholded checks.
type check struct {
	name    string
	idx     int
	slot    func(*Verdicts) *Verdict
	verdict func(*run) (Verdict, bool)
}

// checkList is a function, not a package variable, so nothing can change it.
func checkList() [3]check {
	return [...]check{
		{"DKIM", 0, func(v *Verdicts) *Verdict { return &v.DKIM }, (*run).dkimVerdict},
		{"SPF", 1, func(v *Verdicts) *Verdict { return &v.SPF }, func(r *run) (Verdict, bool) {
			o := r.checkSPF()
			return spfVerdict(o), o.temp()
		}},
		{"DMARC", 2, func(v *Verdicts) *Verdict { return &v.DMARC }, (*run).dmarcVerdict},
	}
}

func spfVerdict(o spfOutcome) Verdict {
	return Verdict{Result: o.result, Level: spfLevel(o.result), Source: o.source, Detail: o.detail}
}

// findRule applies the DESIGN §4 order: address (From:, then envelope
// sender) > verified domain of From: > ip (most specific prefix).
func (e *Evaluator) findRule(ctx context.Context, r *run) (*store.Rule, error) {
	if e.rules == nil {
		return nil, nil
	}
	var addrs []string
	if r.from != "" {
		addrs = append(addrs, r.from)
	}
	if mf := strings.ToLower(r.mailFrom); mf != "" && mf != r.from {
		addrs = append(addrs, mf)
	}
	for _, a := range addrs {
		rule, ok, err := e.find(ctx, store.KindAddress, a)
		if err != nil || ok {
			return rule, err
		}
	}
	if r.fromDomain != "" {
		rule, ok, err := e.find(ctx, store.KindDomain, r.fromDomain)
		if err != nil {
			return nil, err
		}
		// An unverified domain rule is inactive: as if absent.
		if ok && rule.Verified {
			return rule, nil
		}
	}
	ip := r.m.ClientIP.Unmap()
	if !ip.IsValid() {
		return nil, nil
	}
	rules, err := e.rules.IPRules(ctx)
	if err != nil {
		return nil, fmt.Errorf("ip rules: %w", err)
	}
	var best *store.Rule
	bestBits := -1
	for i := range rules {
		p, ok := parsePrefix(rules[i].Pattern)
		if !ok || !p.Contains(ip) {
			continue
		}
		if p.Bits() > bestBits {
			best, bestBits = &rules[i], p.Bits()
		}
	}
	if best != nil {
		rule := *best
		return &rule, nil
	}
	return nil, nil
}

func (e *Evaluator) find(ctx context.Context, kind, pattern string) (*store.Rule, bool, error) {
	rule, err := e.rules.FindRule(ctx, kind, pattern)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s rule %s: %w", kind, pattern, err)
	}
	return &rule, true, nil
}

// parsePrefix reads a CIDR or a bare address (a one-address prefix).
func parsePrefix(s string) (netip.Prefix, bool) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapShift(p.Addr())).Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// unmapShift is how many prefix bits an IPv4-mapped IPv6 prefix loses when
// written as IPv4.
func unmapShift(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// params is a rule with its defaults applied.
type params struct {
	security   string
	thresholds [3]Level // DKIM, SPF, DMARC
}

// ruleParams applies the defaults (DESIGN §4): address and domain rules
// security spf, thresholds gray; ip rules are their own security, thresholds
// fail. An unknown value refuses: a typo must not open the gate.
func ruleParams(rule *store.Rule) (params, error) {
	var p params
	def := Gray
	p.security = strings.ToLower(strings.TrimSpace(rule.Security))
	if rule.Kind == store.KindIP {
		def = Fail
		if p.security == "" {
			p.security = SecIP
		}
	} else if p.security == "" {
		p.security = SecSPF
	}
	switch p.security {
	case SecSPF, SecGoogle, SecOffice365, SecIP, SecAuth, SecNone:
	default:
		return p, fmt.Errorf("the rule has an unknown security type %q", rule.Security)
	}
	for i, s := range []string{rule.DKIM, rule.SPF, rule.DMARC} {
		if strings.TrimSpace(s) == "" {
			p.thresholds[i] = def
			continue
		}
		l, err := ParseLevel(s)
		if err != nil {
			return p, fmt.Errorf("the rule's %s threshold: %w", checkList()[i].name, err)
		}
		p.thresholds[i] = l
	}
	return p, nil
}

// security checks the rule's security type.
func (e *Evaluator) security(r *run, rule *store.Rule, typ string) SecurityResult {
	s := SecurityResult{Type: typ}
	m := r.m
	switch typ {
	case SecNone:
		s.OK, s.Detail = true, "no security check (thresholds only)"
	case SecSPF:
		o := r.checkSPF()
		switch {
		case o.temp():
			s.Temp, s.Detail = true, o.detail
		case o.result == "pass":
			s.OK, s.Detail = true, fmt.Sprintf("SPF pass for the envelope sender's domain %s", o.domain)
		default:
			s.Detail = fmt.Sprintf("SPF for the envelope sender's domain %s is %s; the rule's security spf needs pass", orNone(o.domain), o.result)
		}
	case SecGoogle, SecOffice365:
		domain, who := googleSPF, "Google"
		if typ == SecOffice365 {
			domain, who = office365SPF, "Office 365"
		}
		res, err := e.spfCheck(r.ctx, m.ClientIP, domain, "postmaster@"+domain)
		switch res {
		case spf.Pass:
			s.OK, s.Detail = true, fmt.Sprintf("client IP %s is a %s mail server (SPF of %s: pass)", m.ClientIP, who, domain)
		case spf.TempError:
			s.Temp, s.Detail = true, fmt.Sprintf("SPF of %s: temperror (%v)", domain, err)
		default:
			s.Detail = fmt.Sprintf("client IP %s is not a %s mail server (SPF of %s: %s); the rule's security %s needs one", m.ClientIP, who, domain, res, typ)
		}
	case SecIP:
		list := rule.IPs
		if rule.Kind == store.KindIP {
			list = append([]string{rule.Pattern}, list...)
		}
		ip := m.ClientIP.Unmap()
		for _, c := range list {
			if p, ok := parsePrefix(c); ok && ip.IsValid() && p.Contains(ip) {
				s.OK, s.Detail = true, fmt.Sprintf("client IP %s is inside %s", ip, c)
				return s
			}
		}
		s.Detail = fmt.Sprintf("client IP %s is not inside the rule's IPs (%s)", m.ClientIP, strings.Join(list, ", "))
	case SecAuth:
		login := strings.TrimSpace(m.AuthLogin)
		switch {
		case login == "":
			s.Detail = "the SMTP session is not authenticated; the rule's security auth needs a login"
		case rule.Kind != store.KindAddress:
			s.OK, s.Detail = true, fmt.Sprintf("authenticated as %s", login)
		default:
			want := strings.ToLower(rule.Pattern)
			local, _, _ := strings.Cut(want, "@")
			l := strings.ToLower(login)
			if l == want || (!strings.Contains(l, "@") && l == local) {
				s.OK, s.Detail = true, fmt.Sprintf("authenticated as %s", login)
			} else {
				s.Detail = fmt.Sprintf("authenticated as %s, but the rule's security auth needs the login %s or %s", login, want, local)
			}
		}
	}
	return s
}

func orNull(s string) string {
	if s == "" {
		return "<>"
	}
	return s
}
