package milter

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os/exec"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/registry"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

const corpIP = "192.0.2.20"

// dkimKey makes a key pair, publishes the public key at
// selector._domainkey.domain and returns the private key file.
func dkimKey(t *testing.T, e *env, selector, domain string) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	e.dns.TXT(selector+"._domainkey."+domain, "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(pub))
	return writeFile(t, t.TempDir(), "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
}

// dkimSign signs raw with python3-dkim's dkimsign, a signer that is not
// the verifier's own library.
func dkimSign(t *testing.T, keyFile, selector, domain, raw string, args ...string) string {
	t.Helper()
	py := testutil.NeedCmd(t, "/usr/bin/python3") // the Debian python with python3-dkim
	testutil.NeedCmd(t, "/usr/bin/dkimsign")
	cmd := exec.Command(py, append(append([]string{"/usr/bin/dkimsign"}, args...), selector, domain, keyFile)...)
	cmd.Stdin = strings.NewReader(strings.ReplaceAll(strings.ReplaceAll(raw, "\r\n", "\n"), "\n", "\r\n"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("dkimsign: %v: %s", err, errb.String())
	}
	if !strings.HasPrefix(out.String(), "DKIM-Signature:") {
		t.Fatalf("dkimsign wrote %q", out.String())
	}
	return out.String()
}

func TestDKIMSPFDMARC(t *testing.T) {
	e := newEnv(t)
	e.dns.TXT("corp.test", "v=spf1 ip4:"+corpIP+" -all")
	e.dns.TXT("_dmarc.corp.test", "v=DMARC1; p=quarantine")
	e.dns.TXT("relay.test", "v=spf1 ip4:"+goodIP+" -all") // a mailing service's envelope domain
	key := dkimKey(t, e, "s1", "corp.test")
	other := dkimKey(t, e, "s1", "other.test")
	// Everything must pass for corp.test.
	e.addRule(registry.RuleSpec{Kind: store.KindDomain, Pattern: "corp.test", User: "ops", DKIM: "pass", SPF: "pass", DMARC: "pass"})
	// dkim.test trusts DKIM alone: mail sent through any server.
	e.dns.TXT("_dmarc.dkim.test", "v=DMARC1; p=reject")
	dkimKeyFile := dkimKey(t, e, "mail", "dkim.test")
	e.addRule(registry.RuleSpec{Kind: store.KindDomain, Pattern: "dkim.test", User: "ops", Security: "none", DKIM: "pass", SPF: "fail", DMARC: "pass"})

	msg := func(from string) string {
		return "From: Ops <" + from + ">\nTo: pager\nSubject: db down\nMessage-ID: <" + newMsgID() + ">\n" +
			"Date: Mon, 1 Dec 2025 10:00:00 +0000\nContent-Type: text/plain\n\nThe primary database is down.\n"
	}
	for _, tc := range []struct {
		name, ip, mailFrom, raw string
		reply                   string // prefix
	}{
		{"all pass, relaxed/simple", corpIP, "ops@corp.test", dkimSign(t, key, "s1", "corp.test", msg("ops@corp.test")), "discard"},
		{"all pass, simple/simple", corpIP, "ops@corp.test",
			dkimSign(t, key, "s1", "corp.test", msg("ops@corp.test"), "--hcanon", "simple", "--bcanon", "simple"), "discard"},
		{"all pass, relaxed/relaxed", corpIP, "ops@corp.test",
			dkimSign(t, key, "s1", "corp.test", msg("ops@corp.test"), "--bcanon", "relaxed"), "discard"},
		{"body changed after signing", corpIP, "ops@corp.test",
			strings.Replace(dkimSign(t, key, "s1", "corp.test", msg("ops@corp.test")), "is down", "is up", 1), "550 5.7.1 SMS refused for ops@corp.test: DKIM fail is below"},
		{"not signed", corpIP, "ops@corp.test", msg("ops@corp.test"), "550 5.7.1 SMS refused for ops@corp.test: DKIM gray is below"},
		{"signed by an unaligned domain", corpIP, "ops@corp.test", dkimSign(t, other, "s1", "other.test", msg("ops@corp.test")), "550 5.7.1 SMS refused for ops@corp.test: DKIM gray is below"},
		{"signed, wrong server", badIP, "ops@corp.test", dkimSign(t, key, "s1", "corp.test", msg("ops@corp.test")), "550 5.7.1 SMS refused for ops@corp.test: SPF"},
		{"DKIM alone, any server", badIP, "bounces@relay.test", dkimSign(t, dkimKeyFile, "mail", "dkim.test", msg("alerts@dkim.test")), "discard"},
		{"DKIM alone, not signed", goodIP, "bounces@relay.test", msg("alerts@dkim.test"), "550 5.7.1 SMS refused for alerts@dkim.test: DKIM gray is below"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := e.dial(tc.ip).send(mail{From: tc.mailFrom, Rcpts: []string{gbMobile + "@sms.test"}, Raw: tc.raw})
			if !strings.HasPrefix(o.reply(), tc.reply) {
				t.Errorf("got %q, want %q...", o.reply(), tc.reply)
			}
		})
	}
	var n int
	for _, j := range e.jobs() {
		if j.Text == "The primary database is down." {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d SMS, want 4", n)
	}
}

// An Authentication-Results header with a trusted authserv-id that the
// client wrote itself must not be believed; one bound to this transaction
// (ID/QUEUEID, as OpenDKIM/OpenDMARC write with AuthservIDWithJobID) is.
func TestForgedAuthenticationResults(t *testing.T) {
	e := newEnv(t) // trusted_authserv_ids: [mx.test]
	ar := func(id string) string {
		return "Authentication-Results: " + id + "; spf=pass smtp.mailfrom=alice@example.test;\n" +
			"\tdkim=pass (1024-bit key; unprotected) header.d=example.test header.s=s1;\n" +
			"\tdmarc=pass (p=reject dis=none) header.from=example.test\n"
	}
	m := e.dial(badIP) // SPF of example.test fails for this IP
	for _, tc := range []struct {
		name, header, queueID string
		noMacros              bool
		reply                 string
	}{
		{"forged, bare trusted id", ar("mx.test"), "Q1", false, "550 5.7.1 SMS refused for alice@example.test: SPF for the envelope sender's domain example.test is fail"},
		{"forged, another transaction's queue ID", ar("mx.test/Q0"), "Q2", false, "550 5.7.1"},
		{"bound to this transaction", ar("mx.test/Q3"), "Q3", false, "discard"},
		// No queue ID macro for this message: the previous one's (Q3, which
		// the client learnt from "250 queued as Q3") must not bind it.
		{"stale queue ID", ar("mx.test/Q3"), "", true, "550 5.7.1"},
		{"untrusted id", ar("mx.elsewhere.test/Q4"), "Q4", false, "550 5.7.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.header + textMail("alice@example.test", newMsgID(), "trust me")
			o := m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: raw, QueueID: tc.queueID, NoMacros: tc.noMacros})
			if !strings.HasPrefix(o.reply(), tc.reply) {
				t.Errorf("got %q, want %q...", o.reply(), tc.reply)
			}
		})
	}
	if n := len(e.jobs()); n != 1 {
		t.Errorf("%d jobs, want 1 (the bound header)", n)
	}
	if !strings.Contains(e.log.String(), "ignoring Authentication-Results not bound to this transaction") {
		t.Error("the forged header is not logged")
	}
}

// Security "auth": the {auth_authen} macro of MAIL, of this message only.
func TestAuthSecurity(t *testing.T) {
	e := newEnv(t)
	e.addRule(registry.RuleSpec{Kind: store.KindAddress, Pattern: "frank@example.test", User: "ops", Security: "auth", DKIM: "fail", SPF: "fail", DMARC: "fail"})
	m := e.dial(badIP) // SPF fails: only the login counts
	for _, tc := range []struct {
		name, auth string
		noMacros   bool
		reply      string
	}{
		{"login is the address", "frank@example.test", false, "discard"},
		{"login is the local part", "Frank", false, "discard"},
		{"another login", "mallory", false, "550 5.7.1"},
		{"not authenticated", "", false, "550 5.7.1"},
		{"authenticated before", "frank@example.test", false, "discard"},
		// The MTA sent no macros for this MAIL: the previous message's
		// login must not carry over.
		{"no macros this time", "", true, "550 5.7.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := m.send(mail{From: "frank@example.test", Auth: tc.auth, NoMacros: tc.noMacros, Rcpts: []string{gbMobile + "@sms.test"},
				Raw: textMail("frank@example.test", newMsgID(), "via submission")})
			if !strings.HasPrefix(o.reply(), tc.reply) {
				t.Errorf("got %q, want %q", o.reply(), tc.reply)
			}
		})
	}
}
