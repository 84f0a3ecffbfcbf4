package sendmail

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestExampleInDebianSendmailMC appends examples/sendmail/smsmilter.mc to
// Debian's own /etc/mail/sendmail.mc, the way docs/sendmail.md tells an
// admin to, generates sendmail.cf from it, and checks what Sendmail reads
// from it: the milter line, the macro lists, one check_compat, and the
// drop rules' answers for recipients in and out of the SMS domain (with
// sendmail -bt, address test mode).
func TestExampleInDebianSendmailMC(t *testing.T) {
	in := needSendmail(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	writeSandboxFiles(t, dir)

	// Debian's sendmail.mc as the package installs it, with the paths of
	// the unpacked tree; the /etc/mail/m4 files it includes are written by
	// Debian's sendmailconfig at install time (dial-up and provider
	// settings, empty by default).
	stock, err := os.ReadFile(filepath.Join(in.CFDir, "debian", "sendmail.mc"))
	if err != nil {
		t.Fatal(err)
	}
	var mc strings.Builder
	for _, line := range strings.Split(string(stock), "\n") {
		if strings.Contains(line, "/etc/mail/m4/") {
			continue
		}
		mc.WriteString(strings.ReplaceAll(line, "/usr/share/sendmail/cf", in.CFDir) + "\n")
		if strings.HasPrefix(line, "include(`/usr/share/sendmail/cf/m4/cf.m4')") {
			// Debian's OSTYPE includes its autoconf.m4 by absolute path
			// unless it was read already.
			mc.WriteString("include(`" + filepath.Join(in.CFDir, "debian", "autoconf.m4") + "')dnl\n")
		}
	}
	mc.WriteString(example(t, "smsmilter.mc"))
	mcPath, cfPath := filepath.Join(dir, "sendmail.mc"), filepath.Join(dir, "sendmail.cf")
	if err := os.WriteFile(mcPath, []byte(mc.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runM4(t, in, mcPath, cfPath)
	b, err := os.ReadFile(cfPath)
	if err != nil {
		t.Fatal(err)
	}
	cf := string(b)
	for _, want := range []string{
		"\nO InputMailFilters=smsmilter\n",
		"\nXsmsmilter, S=inet:8890@127.0.0.1, F=T, T=C:10s;S:30s;R:30s;E:5m\n",
		"\nO Milter.macros.connect=j, _, {daemon_name}, {if_name}, {if_addr}\n",
		"\nO Milter.macros.eom={msg_id}, i\n",
		"\nC{SMSDomains}sms.example.com\n",
		"\nKaccess hash -T<TMPF> /etc/mail/access\n",
	} {
		if !strings.Contains(cf, want) {
			t.Errorf("sendmail.cf lacks %q", strings.TrimSpace(want))
		}
	}
	if m := regexp.MustCompile(`(?m)^O Milter\.macros\.envfrom=.*$`).FindString(cf); !strings.Contains(m, "{auth_authen}") || !strings.HasPrefix(m, "O Milter.macros.envfrom=i,") {
		t.Errorf("envfrom macros: %q", m)
	}
	if n := strings.Count(cf, "\nScheck_compat\n"); n != 1 {
		t.Errorf("%d check_compat rulesets, want 1", n)
	}

	// The drop rule on its own (address test mode cannot type the $|
	// that joins check_compat's two arguments; the whole ruleset runs in
	// TestSendmail's bypass test).
	cases := map[string]bool{
		"<+447400123456@sms.example.com>":       true,
		"<+447400123456@SMS.Example.COM>":       true,
		"+447400123456@sms.example.com.":        true,
		"<\"+44 7400 123456\"@sms.example.com>": true,
		"<+447400123456@x.sms.example.com>":     false, // sub-domains are not SMS domains
		"<+447400123456@sms.example.com.au>":    false,
		"<dave@example.net>":                    false,
		"<sms.example.com@example.net>":         false,
	}
	var input strings.Builder
	var order []string
	for addr := range cases {
		order = append(order, addr)
		input.WriteString("SMSRecipient " + addr + "\n")
	}
	cmd := sandboxCmd(dir, in.Sendmail, "-C", cfPath, "-bt")
	cmd.Stdin = strings.NewReader(input.String())
	// It exits 70 for what this machine lacks (Debian's smmta user,
	// /etc/mail/local-host-names): only the answers matter here.
	out, _ := cmd.CombinedOutput()
	var returns []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "SMSRecipient") && strings.Contains(l, "returns:") {
			returns = append(returns, l)
		}
	}
	if len(returns) != len(order) {
		t.Fatalf("sendmail -bt answered %d of %d:\n%s", len(returns), len(order), out)
	}
	for i, addr := range order {
		dropped := strings.Contains(returns[i], "$# discard")
		if dropped != cases[addr] {
			t.Errorf("%s: %s (dropped %v, want %v)", addr, returns[i], dropped, cases[addr])
		}
	}
}
