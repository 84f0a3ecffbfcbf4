package policy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/smsmilter/smsmilter/internal/dnsresolver"
	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
	"github.com/smsmilter/smsmilter/internal/store"
)

// fakeRules is an in-memory registry.
type fakeRules struct {
	mu    sync.Mutex
	rules []store.Rule
	err   error // returned by every call when set
}

func (f *fakeRules) FindRule(_ context.Context, kind, pattern string) (store.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return store.Rule{}, f.err
	}
	for _, r := range f.rules {
		if r.Kind == kind && r.Pattern == pattern {
			return r, nil
		}
	}
	return store.Rule{}, fmt.Errorf("rule %s %s: %w", kind, pattern, store.ErrNotFound)
}

func (f *fakeRules) IPRules(context.Context) ([]store.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var out []store.Rule
	for _, r := range f.rules {
		if r.Kind == store.KindIP {
			out = append(out, r)
		}
	}
	return out, nil
}

// Client IPs of the test world.
var (
	goodIP   = netip.MustParseAddr("192.0.2.10")    // in the SPF records of the .test domains
	badIP    = netip.MustParseAddr("198.51.100.20") // in none
	googleIP = netip.MustParseAddr("172.217.1.1")
	msIP     = netip.MustParseAddr("40.92.1.1")
)

// world is a DNS zone and a DKIM key for the unit tests.
type world struct {
	dns *dnstest.Server
	res *dnsresolver.Resolver
	key ed25519.PrivateKey
}

func newWorld(t testing.TB) *world {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := dnstest.NewServer(t)
	w := &world{dns: s, res: dnsresolver.New(s.Addr, 500*time.Millisecond), key: key}
	dkimKey := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	spfOK := "v=spf1 ip4:192.0.2.0/24 -all"
	for _, d := range []string{"example.test", "other.test", "quarantine.test", "reject.test", "pnone.test", "norecord.test", "strict.test", "relaxed.test"} {
		s.TXT(d, spfOK)
		s.TXT("sel._domainkey."+d, dkimKey)
	}
	s.Add("none.test. 60 IN A 192.0.2.99") // exists, no SPF
	s.TXT("sub.example.test", spfOK)
	s.TXT("sub.strict.test", spfOK)
	s.TXT("sub.relaxed.test", spfOK)
	s.TXT("neutral.test", "v=spf1 ?all")
	s.TXT("softfail.test", "v=spf1 ~all")
	s.TXT("fail.test", "v=spf1 -all")
	s.TXT("permerror.test", "v=spf1 bogus:x ip4:192.0.2.0/24 -all")
	s.TXT("_dmarc.quarantine.test", "v=DMARC1; p=quarantine")
	s.TXT("_dmarc.reject.test", "v=DMARC1; p=reject")
	s.TXT("_dmarc.pnone.test", "v=DMARC1; p=none")
	s.TXT("_dmarc.strict.test", "v=DMARC1; p=none; adkim=s")
	s.TXT("_dmarc.relaxed.test", "v=DMARC1; p=reject")
	s.TXT("_spf.google.com", "v=spf1 ip4:172.217.0.0/16 ~all")
	s.TXT("spf.protection.outlook.com", "v=spf1 ip4:40.92.0.0/15 -all")
	// Domains whose lookups fail temporarily.
	s.TXT("sel._domainkey.tempkey.test", dkimKey)
	s.Set("sel._domainkey.tempkey.test", dnstest.ServFail)
	s.Set("servfail.test", dnstest.ServFail)
	s.TXT("dmtemp.test", spfOK)
	s.Set("_dmarc.dmtemp.test", dnstest.ServFail)
	s.Set("_dmarc.sub.dmtemp.test", dnstest.ServFail)
	return w
}

func (w *world) eval(rules *fakeRules, mod ...func(*Options)) *Evaluator {
	o := Options{Resolver: w.res, Registry: rules, Log: slog.New(slog.DiscardHandler)}
	for _, f := range mod {
		f(&o)
	}
	return New(o)
}

// msg describes a test message.
type msg struct {
	from     string // From: header value ("" = no From field)
	mailFrom string
	ip       netip.Addr
	helo     string
	auth     string
	queueID  string
	signD    string // DKIM d= to sign with ("" = unsigned)
	tamper   bool   // change the body after signing
	extra    []Field
}

func (w *world) build(t testing.TB, mm msg) *Message {
	t.Helper()
	var hdr strings.Builder
	for _, f := range mm.extra {
		hdr.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	if mm.from != "" {
		hdr.WriteString("From: " + mm.from + "\r\n")
	}
	hdr.WriteString("To: +447400123456@sms.example.com\r\nSubject: hello\r\nMessage-ID: <1@test>\r\n\r\n")
	raw := []byte(hdr.String() + "Hello there.\r\nSee you.\r\n")
	if mm.signD != "" {
		raw = w.sign(t, raw, mm.signD)
	}
	m := parseRaw(t, raw)
	if mm.tamper {
		m.Body = append(m.Body, []byte("P.S. changed\r\n")...)
	}
	m.ClientIP, m.MailFrom, m.Helo, m.AuthLogin, m.QueueID = mm.ip, mm.mailFrom, mm.helo, mm.auth, mm.queueID
	if !m.ClientIP.IsValid() {
		m.ClientIP = goodIP
	}
	if m.Helo == "" {
		m.Helo = "mail.example.test"
	}
	return m
}

func (w *world) sign(t testing.TB, raw []byte, d string) []byte {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(raw), &dkim.SignOptions{
		Domain: d, Selector: "sel", Signer: w.key, Hash: crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationSimple,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// parseRaw splits a message into fields as a milter sees them: the name,
// and the value with its leading space and folding.
func parseRaw(t testing.TB, raw []byte) *Message {
	t.Helper()
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatalf("no end of header in %q", raw)
	}
	head, body := string(raw[:i+2]), raw[i+4:]
	m := &Message{Body: body}
	for _, line := range strings.SplitAfter(head, "\r\n") {
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(m.Header) > 0 {
			m.Header[len(m.Header)-1].Value += "\r\n" + strings.TrimSuffix(line, "\r\n")
			continue
		}
		name, value, ok := strings.Cut(strings.TrimSuffix(line, "\r\n"), ":")
		if !ok {
			t.Fatalf("bad header line %q", line)
		}
		m.Header = append(m.Header, Field{Name: name, Value: value})
	}
	return m
}

func addrRule(pattern string, sec, dk, sp, dm string) store.Rule {
	return store.Rule{Kind: store.KindAddress, Pattern: pattern, User: "u-" + pattern, Security: sec, DKIM: dk, SPF: sp, DMARC: dm}
}

func domainRule(pattern string, verified bool, sec, dk, sp, dm string) store.Rule {
	return store.Rule{Kind: store.KindDomain, Pattern: pattern, User: "u-" + pattern, Security: sec, DKIM: dk, SPF: sp, DMARC: dm, Verified: verified}
}

func ipRule(cidr string, dk, sp, dm string) store.Rule {
	return store.Rule{Kind: store.KindIP, Pattern: cidr, User: "u-" + cidr, DKIM: dk, SPF: sp, DMARC: dm}
}
