package dnsresolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
)

// The resolver must plug into blitiri spf as is.
var _ spf.DNSResolver = (*Resolver)(nil)

func newTest(t *testing.T) (*dnstest.Server, *Resolver) {
	t.Helper()
	s := dnstest.NewServer(t)
	s.Add(
		"a.test. 60 IN A 192.0.2.1",
		"a.test. 60 IN AAAA 2001:db8::1",
		"v4.test. 60 IN A 192.0.2.4",
		"alias.test. 60 IN CNAME a.test.",
		"mx.test. 60 IN MX 20 b.mx.test.",
		"mx.test. 60 IN MX 10 a.mx.test.",
		"1.2.0.192.in-addr.arpa. 60 IN PTR a.test.",
		`multi.test. 60 IN TXT "v=spf1 " "ip4:192.0.2.0/24 " "-all"`,
		`two.test. 60 IN TXT "first"`,
		`two.test. 60 IN TXT "second"`,
		`quote.test. 60 IN TXT "say \"hi\" \\ done"`,
	)
	s.Set("servfail.test", dnstest.ServFail)
	s.Set("refused.test", dnstest.Refused)
	s.Set("drop.test", dnstest.Drop)
	s.Set("trunc.test", dnstest.Truncate)
	s.TXT("trunc.test", "over tcp")
	return s, New(s.Addr, 300*time.Millisecond)
}

// dnsErr asserts err is a bare *net.DNSError (spf and go-msgauth use a type
// assertion, not errors.As) with the expected flags.
func dnsErr(t *testing.T, err error, notFound, temporary bool) {
	t.Helper()
	de, ok := err.(*net.DNSError)
	if !ok {
		t.Fatalf("error %v (%T) is not a bare *net.DNSError", err, err)
	}
	if de.IsNotFound != notFound || de.Temporary() != temporary {
		t.Fatalf("error %v: IsNotFound=%v Temporary=%v, want %v %v", err, de.IsNotFound, de.Temporary(), notFound, temporary)
	}
}

func TestLookupTXT(t *testing.T) {
	_, r := newTest(t)
	ctx := context.Background()
	tests := []struct {
		name      string
		want      []string
		notFound  bool
		temporary bool
	}{
		{name: "multi.test", want: []string{"v=spf1 ip4:192.0.2.0/24 -all"}},
		{name: "two.test", want: []string{"first", "second"}},
		{name: "quote.test", want: []string{`say "hi" \ done`}},
		{name: "trunc.test", want: []string{"over tcp"}},
		{name: "nxdomain.test", notFound: true},
		{name: "a.test", notFound: true}, // NOERROR, no TXT
		{name: "servfail.test", temporary: true},
		{name: "refused.test", temporary: true},
		{name: "drop.test", temporary: true},
		{name: "bad..name", notFound: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.LookupTXT(ctx, tt.name)
			if tt.want != nil {
				if err != nil {
					t.Fatal(err)
				}
				slices.Sort(got)
				if !slices.Equal(got, tt.want) {
					t.Fatalf("got %q, want %q", got, tt.want)
				}
				return
			}
			dnsErr(t, err, tt.notFound, tt.temporary)
		})
	}
}

func TestTimeoutIsTemporary(t *testing.T) {
	_, r := newTest(t)
	start := time.Now()
	_, err := r.LookupTXT(context.Background(), "drop.test")
	dnsErr(t, err, false, true)
	if !err.(*net.DNSError).IsTimeout {
		t.Errorf("IsTimeout not set: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v, timeout is 300ms", d)
	}

	// A cancelled context ends the wait too.
	ctx, cancel := context.WithCancel(context.Background())
	r2 := New(r.Addr(), time.Minute)
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	_, err = r2.LookupTXT(ctx, "drop.test")
	dnsErr(t, err, false, true)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

func TestLargeAnswerFallsBackToTCP(t *testing.T) {
	s, r := newTest(t)
	// 20 records of 200 bytes do not fit 1232 bytes of UDP.
	var want []string
	for i := range 20 {
		v := fmt.Sprintf("%02d", i) + strings.Repeat("x", 198)
		s.TXT("big.test", v)
		want = append(want, v)
	}
	got, err := r.LookupTXT(context.Background(), "big.test")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
}

func TestLongTXTJoined(t *testing.T) {
	s, r := newTest(t)
	key := "v=DKIM1; k=rsa; p=" + strings.Repeat("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A", 12)
	s.TXT("sel._domainkey.a.test", key)
	got, err := r.LookupTXT(context.Background(), "sel._domainkey.a.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != key {
		t.Fatalf("got %q", got)
	}
}

func TestLookupIPAddr(t *testing.T) {
	s, r := newTest(t)
	s.Add("half.test. 60 IN A 192.0.2.9")
	s.Set("sf6.test", dnstest.ServFail)
	ctx := context.Background()
	tests := []struct {
		name      string
		want      []string
		notFound  bool
		temporary bool
	}{
		{name: "a.test", want: []string{"192.0.2.1", "2001:db8::1"}},
		{name: "v4.test", want: []string{"192.0.2.4"}},
		{name: "alias.test", want: []string{"192.0.2.1", "2001:db8::1"}},
		{name: "mx.test", notFound: true},
		{name: "nxdomain.test", notFound: true},
		{name: "sf6.test", temporary: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ips, err := r.LookupIPAddr(ctx, tt.name)
			if tt.want == nil {
				dnsErr(t, err, tt.notFound, tt.temporary)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range ips {
				got = append(got, ip.IP.String())
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}

	nips, err := r.LookupNetIP(ctx, "ip4", "a.test")
	if err != nil || len(nips) != 1 || nips[0].String() != "192.0.2.1" {
		t.Errorf("LookupNetIP ip4: %v %v", nips, err)
	}
	nips, err = r.LookupNetIP(ctx, "ip", "a.test")
	if err != nil || len(nips) != 2 {
		t.Errorf("LookupNetIP ip: %v %v", nips, err)
	}
}

func TestLookupMXAndAddr(t *testing.T) {
	_, r := newTest(t)
	ctx := context.Background()
	mxs, err := r.LookupMX(ctx, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(mxs) != 2 || mxs[0].Host != "a.mx.test." || mxs[0].Pref != 10 || mxs[1].Host != "b.mx.test." {
		t.Errorf("MX: %+v %+v", mxs[0], mxs[1])
	}
	_, err = r.LookupMX(ctx, "a.test")
	dnsErr(t, err, true, false)

	names, err := r.LookupAddr(ctx, "192.0.2.1")
	if err != nil || !slices.Equal(names, []string{"a.test."}) {
		t.Errorf("PTR: %v %v", names, err)
	}
	_, err = r.LookupAddr(ctx, "192.0.2.2")
	dnsErr(t, err, true, false)
	_, err = r.LookupAddr(ctx, "not an ip")
	if _, ok := err.(*net.DNSError); !ok {
		t.Errorf("bad address: %v", err)
	}
}

func TestNoServer(t *testing.T) {
	// A UDP port nobody listens on: ICMP port unreachable or a timeout,
	// both temporary.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	r := New(addr, 300*time.Millisecond)
	_, err = r.LookupTXT(context.Background(), "a.test")
	dnsErr(t, err, false, true)
}

func TestSPFThroughResolver(t *testing.T) {
	s, r := newTest(t)
	s.TXT("ok.test", "v=spf1 ip4:192.0.2.0/24 -all")
	s.TXT("inc.test", "v=spf1 include:servfail.test -all")
	ip := net.ParseIP("192.0.2.7")
	tests := []struct {
		domain string
		want   spf.Result
	}{
		{"ok.test", spf.Pass},
		{"nxdomain.test", spf.None},
		{"servfail.test", spf.TempError},
		{"inc.test", spf.TempError},
		{"multi.test", spf.Pass},
	}
	for _, tt := range tests {
		got, err := spf.CheckHostWithSender(ip, "helo.test", "x@"+tt.domain,
			spf.WithResolver(r), spf.WithContext(context.Background()))
		if got != tt.want {
			t.Errorf("%s: %s (%v), want %s", tt.domain, got, err, tt.want)
		}
	}
}

func TestSystemResolverErrors(t *testing.T) {
	// Whatever the machine's resolver does with a reserved name (answer
	// NXDOMAIN, or fail without network), the error is a *net.DNSError.
	r := New("", 2*time.Second)
	_, err := r.LookupTXT(context.Background(), "smsmilter-test.invalid")
	var de *net.DNSError
	if err == nil || !errors.As(err, &de) {
		t.Fatalf("got %v (%T)", err, err)
	}
	if _, ok := err.(*net.DNSError); !ok {
		t.Fatalf("not bare: %T", err)
	}
}
