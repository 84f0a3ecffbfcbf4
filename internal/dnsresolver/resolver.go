// Package dnsresolver is the one DNS resolver smsmilter uses for SPF, DKIM,
// DMARC and domain verification. It either wraps the system resolver or
// talks to a configured server (dns.resolver, host:port) directly with
// github.com/miekg/dns.
//
// Every error it returns is a bare *net.DNSError with IsNotFound and
// IsTemporary/IsTimeout set, because blitiri.com.ar/go/spf and go-msgauth
// tell "no such record" from "try again later" by a type assertion on
// exactly that type: a wrapped error would turn a timeout into a permanent
// failure and refuse mail that should have been retried.
package dnsresolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout bounds one query when New is given no timeout.
const DefaultTimeout = 5 * time.Second

// ednsSize is the UDP payload size we advertise: the DNS flag day 2020
// value, large enough for most DKIM keys while avoiding IP fragmentation.
// Larger answers come back truncated and are fetched again over TCP.
const ednsSize = 1232

// Resolver answers the lookups smsmilter needs. It satisfies
// blitiri.com.ar/go/spf's DNSResolver interface. It holds no mutable state
// and is safe for concurrent use.
type Resolver struct {
	addr    string // "" = system resolver
	timeout time.Duration
	sys     *net.Resolver
}

// New returns a resolver querying addr (host:port) or, with addr "", the
// system resolver. timeout bounds each query (DefaultTimeout if <= 0).
func New(addr string, timeout time.Duration) *Resolver {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	r := &Resolver{addr: addr, timeout: timeout}
	if addr == "" {
		r.sys = &net.Resolver{}
	}
	return r
}

// Addr is the server queried, "" for the system resolver.
func (r *Resolver) Addr() string { return r.addr }

// LookupTXT returns the TXT records of name, one string per record: the
// character-strings of a record are joined, as RFC 7208 §3.3 and RFC 6376
// §3.6.2.2 require (long DKIM keys are split into 255-byte strings).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if r.sys != nil {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		txts, err := r.sys.LookupTXT(ctx, name)
		return txts, sysErr(err, name)
	}
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			var b strings.Builder
			for _, s := range t.Txt {
				b.WriteString(unescape(s))
			}
			out = append(out, b.String())
		}
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA records of host. Like the standard
// library it succeeds when either family has addresses.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if r.sys != nil {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		ips, err := r.sys.LookupIPAddr(ctx, host)
		return ips, sysErr(err, host)
	}
	type res struct {
		rrs []dns.RR
		err error
	}
	ch := make(chan res, 1)
	go func() {
		rrs, err := r.query(ctx, host, dns.TypeAAAA)
		ch <- res{rrs, err}
	}()
	rrs4, err4 := r.query(ctx, host, dns.TypeA)
	r6 := <-ch
	var out []net.IPAddr
	for _, rr := range append(rrs4, r6.rrs...) {
		switch a := rr.(type) {
		case *dns.A:
			out = append(out, net.IPAddr{IP: a.A})
		case *dns.AAAA:
			out = append(out, net.IPAddr{IP: a.AAAA})
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	// Neither family answered: a temporary failure of either one means we
	// do not know that the name has no address.
	for _, err := range []error{err4, r6.err} {
		var de *net.DNSError
		if errors.As(err, &de) && de.Temporary() {
			return nil, de
		}
	}
	if err4 != nil {
		return nil, err4
	}
	if r6.err != nil {
		return nil, r6.err
	}
	return nil, notFound(host, r.addr)
}

// LookupMX returns the MX records of name sorted by preference. Host names
// are absolute (trailing dot), as with net.Resolver.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if r.sys != nil {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		mxs, err := r.sys.LookupMX(ctx, name)
		return mxs, sysErr(err, name)
	}
	rrs, err := r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var out []*net.MX
	for _, rr := range rrs {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
		}
	}
	slices.SortStableFunc(out, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return out, nil
}

// LookupAddr returns the PTR names of an IP address (absolute, trailing dot).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	if r.sys != nil {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		names, err := r.sys.LookupAddr(ctx, addr)
		return names, sysErr(err, addr)
	}
	arpa, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr, Server: r.addr}
	}
	rrs, err := r.query(ctx, arpa, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if p, ok := rr.(*dns.PTR); ok {
			out = append(out, p.Ptr)
		}
	}
	return out, nil
}

// LookupNetIP returns the addresses of host of one network ("ip", "ip4" or
// "ip6"), like net.Resolver.LookupNetIP.
func (r *Resolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if r.sys != nil {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		ips, err := r.sys.LookupNetIP(ctx, network, host)
		return ips, sysErr(err, host)
	}
	var qtype uint16
	switch network {
	case "ip":
		ips, err := r.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		out := make([]netip.Addr, 0, len(ips))
		for _, ip := range ips {
			if a, ok := netip.AddrFromSlice(ip.IP); ok {
				out = append(out, a.Unmap())
			}
		}
		return out, nil
	case "ip4":
		qtype = dns.TypeA
	case "ip6":
		qtype = dns.TypeAAAA
	default:
		return nil, &net.DNSError{Err: "unsupported network " + network, Name: host, Server: r.addr}
	}
	rrs, err := r.query(ctx, host, qtype)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, rr := range rrs {
		var ip net.IP
		switch a := rr.(type) {
		case *dns.A:
			ip = a.A
		case *dns.AAAA:
			ip = a.AAAA
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// query asks the configured server for name/qtype and returns the records of
// that type at the end of the CNAME chain. No record of the type (NXDOMAIN
// or an empty NOERROR answer) is a not-found error.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn := dns.Fqdn(name)
	if _, ok := dns.IsDomainName(fqdn); !ok {
		// Not a name any server could have: as good as NXDOMAIN, and
		// permanent (SPF macros can expand to such strings).
		return nil, &net.DNSError{Err: "invalid domain name", Name: name, Server: r.addr, IsNotFound: true}
	}
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	resp, err := r.exchange(ctx, m, "udp")
	if err == nil && resp.Truncated {
		resp, err = r.exchange(ctx, m, "tcp")
	}
	if err != nil {
		return nil, netErr(err, name, r.addr)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, notFound(name, r.addr)
	default:
		// SERVFAIL, REFUSED and anything stranger: the server could not
		// answer now. Calling it temporary makes the MTA retry instead of
		// refusing mail over a resolver hiccup.
		return nil, &net.DNSError{Err: "server answered " + dns.RcodeToString[resp.Rcode], Name: name, Server: r.addr, IsTemporary: true}
	}
	rrs := answersFor(resp.Answer, fqdn, qtype)
	if len(rrs) == 0 {
		return nil, notFound(name, r.addr)
	}
	return rrs, nil
}

// exchange sends one query over network, bounded by the resolver's timeout
// and by ctx (also its cancellation, which miekg/dns alone ignores).
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, network string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: r.timeout, UDPSize: ednsSize}
	conn, err := c.DialContext(ctx, r.addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return resp, err
}

// answersFor follows the CNAME chain from name and returns the records of
// qtype owned by its end, ignoring anything else a server put in the answer.
func answersFor(ans []dns.RR, name string, qtype uint16) []dns.RR {
	owner := name
	// A chain cannot be longer than the answer; the bound stops CNAME loops.
	for range len(ans) {
		next := ""
		for _, rr := range ans {
			if c, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME && strings.EqualFold(c.Hdr.Name, owner) {
				next = c.Target
				break
			}
		}
		if next == "" {
			break
		}
		owner = next
	}
	var out []dns.RR
	for _, rr := range ans {
		if rr.Header().Rrtype == qtype && strings.EqualFold(rr.Header().Name, owner) {
			out = append(out, rr)
		}
	}
	return out
}

func notFound(name, server string) *net.DNSError {
	return &net.DNSError{Err: "no such host", Name: name, Server: server, IsNotFound: true}
}

// netErr turns a transport failure into a temporary *net.DNSError.
func netErr(err error, name, server string) *net.DNSError {
	de := &net.DNSError{Err: err.Error(), Name: name, Server: server, IsTemporary: true}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		de.Err = "i/o timeout"
		de.IsTimeout = true
	}
	return de
}

// sysErr makes sure errors from the system resolver are bare *net.DNSError
// (they usually are; a context error may not be).
func sysErr(err error, name string) error {
	if err == nil {
		return nil
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de
	}
	return netErr(err, name, "")
}

// unescape undoes miekg/dns's presentation escaping of TXT strings
// (`\"`, `\\`, `\DDD`) so callers see the bytes that were published.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b = append(b, s[i])
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			b = append(b, (s[i+1]-'0')*100+(s[i+2]-'0')*10+(s[i+3]-'0'))
			i += 3
			continue
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
