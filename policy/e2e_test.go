package policy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
	"github.com/smsmilter/smsmilter/internal/dnsresolver"
	"github.com/smsmilter/smsmilter/internal/smtpreply"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

// realDNS is dnsmasq serving TXT records for .test on a loopback port,
// kept in a test-owned directory and killed when the test ends.
func realDNS(t *testing.T, txt map[string]string) *dnsresolver.Resolver {
	t.Helper()
	bin := testutil.NeedCmd(t, "dnsmasq")
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		port := testutil.FreePort(t)
		args := []string{
			"--keep-in-foreground", "--conf-file=/dev/null",
			"--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
			fmt.Sprintf("--port=%d", port), "--local=/test/",
			"--pid-file=" + filepath.Join(dir, "dnsmasq.pid"),
			"--log-facility=" + filepath.Join(dir, "dnsmasq.log"),
		}
		if os.Geteuid() == 0 {
			// Stay root rather than switch to nobody, which cannot
			// write the log in our 0700 temp directory.
			args = append(args, "--user=root")
		}
		for name, value := range txt {
			// dnsmasq splits a text at commas into strings; none of
			// ours has one. It splits long values into 255-byte strings.
			if strings.Contains(value, ",") {
				t.Fatalf("TXT %s: dnsmasq would split %q at the comma", name, value)
			}
			args = append(args, "--txt-record="+name+","+value)
		}
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		r := dnsresolver.New(fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case err := <-exited:
				exited <- err
				if attempt < 3 {
					t.Logf("dnsmasq on port %d exited (%v): %s; retrying", port, err, stderr.String())
					goto next
				}
				t.Fatalf("dnsmasq exited: %v: %s", err, stderr.String())
			default:
			}
			if _, err := r.LookupTXT(context.Background(), "ready.test"); err == nil {
				return r
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("dnsmasq did not answer: %s", stderr.String())
	next:
	}
}

// rsaKey makes a 2048-bit key with openssl and returns its PEM file and the
// DKIM TXT value publishing it.
func rsaKey(t *testing.T) (path string, key *rsa.PrivateKey, txt string) {
	t.Helper()
	openssl := testutil.NeedCmd(t, "openssl")
	path = filepath.Join(t.TempDir(), "dkim.pem")
	if out, err := exec.Command(openssl, "genrsa", "-traditional", "-out", path, "2048").CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v: %s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		t.Fatalf("no PEM in %s", path)
	}
	key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return path, key, "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)
}

func pySign(t *testing.T, keyFile, domain string, raw []byte) []byte {
	t.Helper()
	bin := testutil.NeedCmd(t, "dkimsign")
	cmd := exec.Command(bin, "s1", domain, keyFile)
	cmd.Stdin = bytes.NewReader(raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 || !bytes.HasPrefix(out, []byte("DKIM-Signature:")) {
		t.Fatalf("dkimsign: %v: %s\n%s", err, stderr.String(), out)
	}
	return out
}

func goSign(t *testing.T, key crypto.Signer, domain string, canon dkim.Canonicalization, raw []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(raw), &dkim.SignOptions{
		Domain: domain, Selector: "s1", Signer: key,
		HeaderCanonicalization: canon, BodyCanonicalization: canon,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestEndToEndRealDNS(t *testing.T) {
	keyFile, key, keyTXT := rsaKey(t)
	if len(keyTXT) <= 255 {
		t.Fatalf("key record %d bytes: too short to test string splitting", len(keyTXT))
	}
	res := realDNS(t, map[string]string{
		"ready.test":               "ok",
		"e2e.test":                 "v=spf1 ip4:192.0.2.0/24 -all",
		"_dmarc.e2e.test":          "v=DMARC1; p=reject",
		"s1._domainkey.e2e.test":   keyTXT,
		"other.test":               "v=spf1 ip4:192.0.2.0/24 -all",
		"s1._domainkey.other.test": keyTXT,
	})

	// The key must come as several strings for the join to be tested.
	q := new(dns.Msg)
	q.SetQuestion("s1._domainkey.e2e.test.", dns.TypeTXT)
	q.SetEdns0(4096, false)
	a, err := dns.Exchange(q, res.Addr())
	if err != nil || len(a.Answer) != 1 {
		t.Fatalf("raw query: %v %v", a, err)
	}
	if n := len(a.Answer[0].(*dns.TXT).Txt); n < 2 {
		t.Fatalf("dnsmasq served the key as %d string(s)", n)
	}

	const plain = "From: Alice <alice@e2e.test>\r\nTo: +447400123456@sms.example.com\r\n" +
		"Subject: a subject\r\n  folded onto a second line\r\nMessage-ID: <e2e@e2e.test>\r\n\r\n" +
		"Meeting moved to 3pm.\r\n\r\nAlice\r\n"
	strict := store.Rule{Kind: store.KindDomain, Pattern: "e2e.test", User: "sales", Security: SecSPF,
		DKIM: "pass", SPF: "pass", DMARC: "pass", Verified: true}

	type want struct{ dkim, spf, dmarc Level }
	tests := []struct {
		name   string
		raw    func() []byte
		mod    func(*Message)
		rule   store.Rule
		opts   func(*Options)
		verd   want
		allow  bool
		want45 bool
	}{
		{name: "dkimsign: all pass", raw: func() []byte { return pySign(t, keyFile, "e2e.test", []byte(plain)) },
			rule: strict, verd: want{Pass, Pass, Pass}, allow: true},
		{name: "dkimsign: tampered body", raw: func() []byte { return pySign(t, keyFile, "e2e.test", []byte(plain)) },
			mod:  func(m *Message) { m.Body = bytes.Replace(m.Body, []byte("3pm"), []byte("4pm"), 1) },
			rule: strict, verd: want{Fail, Pass, Pass}, allow: false},
		{name: "dkimsign: unaligned d=", raw: func() []byte { return pySign(t, keyFile, "other.test", []byte(plain)) },
			rule: strict, verd: want{Gray, Pass, Pass}, allow: false},
		{name: "dkimsign: unaligned d= under gray threshold", raw: func() []byte { return pySign(t, keyFile, "other.test", []byte(plain)) },
			rule: func() store.Rule { r := strict; r.DKIM = "gray"; return r }(), verd: want{Gray, Pass, Pass}, allow: true},
		{name: "go signer simple/simple", raw: func() []byte { return goSign(t, key, "e2e.test", dkim.CanonicalizationSimple, []byte(plain)) },
			rule: strict, verd: want{Pass, Pass, Pass}, allow: true},
		{name: "go signer relaxed, tampered header", raw: func() []byte { return goSign(t, key, "e2e.test", dkim.CanonicalizationRelaxed, []byte(plain)) },
			mod: func(m *Message) {
				for i := range m.Header {
					if m.Header[i].Name == "Subject" {
						m.Header[i].Value = " another subject"
					}
				}
			},
			rule: strict, verd: want{Fail, Pass, Pass}, allow: false},
		{name: "client IP outside SPF, DKIM alone passes DMARC", raw: func() []byte { return pySign(t, keyFile, "e2e.test", []byte(plain)) },
			mod:  func(m *Message) { m.ClientIP = badIP },
			rule: func() store.Rule { r := strict; r.Security, r.SPF = SecNone, "fail"; return r }(), verd: want{Pass, Fail, Pass}, allow: true},
		{name: "forged Authentication-Results not believed",
			raw:  func() []byte { return []byte(forgedAR("mx.e2e.test") + plain) },
			mod:  func(m *Message) { m.ClientIP = badIP },
			opts: func(o *Options) { o.TrustedAuthservIDs = []string{"mx.e2e.test"} },
			rule: strict, verd: want{Gray, Fail, Fail}, allow: false},
		{name: "bound Authentication-Results believed",
			raw:  func() []byte { return []byte(forgedAR("mx.e2e.test/7F3A21C04B") + plain) },
			mod:  func(m *Message) { m.ClientIP = badIP },
			opts: func(o *Options) { o.TrustedAuthservIDs = []string{"mx.e2e.test"} },
			rule: strict, verd: want{Pass, Pass, Pass}, allow: true},
		{name: "upstream strips forged: bare id believed",
			raw: func() []byte { return []byte(forgedAR("mx.e2e.test") + plain) },
			mod: func(m *Message) { m.ClientIP = badIP },
			opts: func(o *Options) {
				o.TrustedAuthservIDs = []string{"mx.e2e.test"}
				o.UpstreamStripsForged = true
			},
			rule: strict, verd: want{Pass, Pass, Pass}, allow: true},
		{name: "name outside the served zone: REFUSED is temporary",
			raw:  func() []byte { return []byte(plain) },
			mod:  func(m *Message) { m.MailFrom = "alice@example.com" },
			rule: func() store.Rule { r := strict; r.DKIM, r.SPF, r.DMARC = "fail", "fail", "fail"; return r }(), want45: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := parseRaw(t, tt.raw())
			m.ClientIP, m.Helo, m.MailFrom, m.QueueID = goodIP, "mail.e2e.test", "alice@e2e.test", "7F3A21C04B"
			if tt.mod != nil {
				tt.mod(m)
			}
			o := Options{Resolver: res, Registry: &fakeRules{rules: []store.Rule{tt.rule}}}
			if tt.opts != nil {
				tt.opts(&o)
			}
			e := New(o)
			d, err := e.Decide(context.Background(), m, false)
			if tt.want45 {
				if se, ok := smtpreply.As(err); !ok || se.Code != 451 || se.Enhanced != "4.7.0" {
					t.Fatalf("got %v, want 451 4.7.0", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tt.allow {
				t.Errorf("allowed %v, want %v: %v", d.Allowed, tt.allow, d.Err())
			}
			d, err = e.Decide(context.Background(), m, true)
			if err != nil {
				t.Fatal(err)
			}
			got := want{d.Verdicts.DKIM.Level, d.Verdicts.SPF.Level, d.Verdicts.DMARC.Level}
			if got != tt.verd {
				var b bytes.Buffer
				d.Explain(&b)
				t.Errorf("levels %v, want %v\n%s", got, tt.verd, b.String())
			}
		})
	}
}

// forgedAR is what a client (or the real MTA, when bound) writes claiming
// every check passed.
func forgedAR(id string) string {
	return "Authentication-Results: " + id + ";\r\n" +
		"\tdkim=pass (2048-bit key; unprotected) header.d=e2e.test header.i=@e2e.test header.b=Zm9v;\r\n" +
		"\tspf=pass smtp.mailfrom=alice@e2e.test;\r\n" +
		"\tdmarc=pass (p=reject dis=none) header.from=e2e.test\r\n"
}
