// Package dnstest runs a small authoritative DNS server on loopback for
// tests, in the spirit of net/http/httptest: records are added in zone-file
// syntax, and names can be made to fail (SERVFAIL, REFUSED, no answer at
// all, truncated UDP answers) so the tests see exactly the failures a real
// resolver produces. It also counts queries, so a test can tell that a check
// was not run.
package dnstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Behaviour makes a name answer in a special way.
type Behaviour int

// Behaviours.
const (
	Normal   Behaviour = iota
	ServFail           // answer SERVFAIL
	Refused            // answer REFUSED
	Drop               // never answer (the client times out)
	Truncate           // over UDP answer with TC set and no records; over TCP normally
)

// Server is a DNS server on 127.0.0.1 serving UDP and TCP on one port.
type Server struct {
	Addr string // host:port

	mu      sync.Mutex
	rrs     []dns.RR
	special map[string]Behaviour // by lower-case FQDN
	queries map[string]int       // by lower-case FQDN

	udp, tcp *dns.Server
}

// NewServer starts a server; it is shut down when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{special: map[string]Behaviour{}, queries: map[string]int{}}
	var err error
	// The UDP port is random; the TCP listener must get the same number,
	// which may be taken: try a few times.
	for range 20 {
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			continue
		}
		var ln net.Listener
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue
		}
		s.Addr = pc.LocalAddr().String()
		s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.handleUDP)}
		s.tcp = &dns.Server{Listener: ln, Handler: dns.HandlerFunc(s.handleTCP)}
		break
	}
	if s.udp == nil {
		t.Fatalf("dnstest: cannot listen: %v", err)
	}
	started := make(chan struct{}, 2)
	s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(func() {
		s.udp.Shutdown()
		s.tcp.Shutdown()
	})
	return s
}

// Add adds records in zone-file syntax ("a.test. 60 IN A 192.0.2.1"); it
// panics on a syntax error, which is a bug in the test.
func (s *Server) Add(records ...string) {
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil || rr == nil {
			panic(fmt.Sprintf("dnstest: bad record %q: %v", r, err))
		}
		s.AddRR(rr)
	}
}

// AddRR adds a record.
func (s *Server) AddRR(rr dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rrs = append(s.rrs, rr)
}

// TXT adds a TXT record with value, split into 255-byte character-strings
// the way DNS servers publish long values (DKIM keys).
func (s *Server) TXT(name, value string) {
	s.AddRR(&dns.TXT{
		Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
		Txt: SplitTXT(value),
	})
}

// SplitTXT splits a value into character-strings of at most 255 bytes,
// escaped for miekg/dns.
func SplitTXT(value string) []string {
	var out []string
	for {
		n := min(len(value), 255)
		out = append(out, escape(value[:n]))
		value = value[n:]
		if value == "" {
			return out
		}
	}
}

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Set makes every query for name behave as b.
func (s *Server) Set(name string, b Behaviour) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.special[strings.ToLower(dns.Fqdn(name))] = b
}

// Queries reports how many queries for name (any type) arrived.
func (s *Server) Queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[strings.ToLower(dns.Fqdn(name))]
}

// TotalQueries reports how many queries arrived in all.
func (s *Server) TotalQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.queries {
		n += v
	}
	return n
}

func (s *Server) handleUDP(w dns.ResponseWriter, q *dns.Msg) { s.handle(w, q, true) }
func (s *Server) handleTCP(w dns.ResponseWriter, q *dns.Msg) { s.handle(w, q, false) }

func (s *Server) handle(w dns.ResponseWriter, q *dns.Msg, udp bool) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	qq := q.Question[0]
	name := strings.ToLower(qq.Name)

	s.mu.Lock()
	s.queries[name]++
	b := s.special[name]
	exists := false
	// Like an authoritative server, follow CNAMEs inside the zone.
	owner := name
	for range 8 {
		next := ""
		for _, rr := range s.rrs {
			h := rr.Header()
			if !strings.EqualFold(h.Name, owner) {
				continue
			}
			exists = true
			switch {
			case h.Rrtype == qq.Qtype:
				m.Answer = append(m.Answer, dns.Copy(rr))
			case h.Rrtype == dns.TypeCNAME:
				m.Answer = append(m.Answer, dns.Copy(rr))
				next = rr.(*dns.CNAME).Target
			}
		}
		if next == "" {
			break
		}
		owner = next
	}
	s.mu.Unlock()

	switch b {
	case Drop:
		return
	case ServFail:
		m.Answer = nil
		m.Rcode = dns.RcodeServerFailure
	case Refused:
		m.Answer = nil
		m.Rcode = dns.RcodeRefused
	case Truncate:
		if udp {
			m.Answer = nil
			m.Truncated = true
		}
	default:
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
	}
	if udp {
		// Like a real server: what does not fit the client's buffer is
		// cut and flagged TC, so the client retries over TCP.
		size := dns.MinMsgSize
		if opt := q.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
			m.SetEdns0(opt.UDPSize(), false)
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}
