package main

import (
	"bytes"
	"fmt"
	"mime"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// importEnv has users ops and sales and one address rule already present.
func importEnv(t *testing.T, extra string) *env {
	e := newEnv(t, extra)
	e.must("user", "add", "ops", "--sender-id", "ACME")
	e.must("user", "add", "sales", "--sender-id", "+447400123456")
	e.must("address", "add", "existing@example.com", "--user", "ops")
	return e
}

// addressRules lists the patterns of the address rules in the store.
func (e *env) addressRules() []string {
	e.t.Helper()
	var out []string
	for k := range e.rules() {
		if p, ok := strings.CutPrefix(k, "address:"); ok {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// badCSV has one error of each kind; row numbers count the header as row 1,
// so the malformed address is on row 7.
const badCSV = "\xef\xbb\xbf" + "email,user,security,dkim,spf,dmarc\r\n" +
	"alice@example.com,ops\r\n" + // 2
	"\"Bob.Smith@Example.com\",\"sales\",\"auth\",\"pass\",\"gray\",\"fail\"\r\n" + // 3
	"\"carol@example.com,ops\",ops\r\n" + // 4: the comma is inside the quoted first field
	"alice@example.com,sales\r\n" + // 5: duplicate of row 2
	"existing@example.com,ops\r\n" + // 6: already in the store
	"bob@,ops\r\n" + // 7
	"dave@example.com,ghost\r\n" + // 8: unknown user
	"erin@example.com,ops,ip\r\n" + // 9: ip needs --ips
	"frank@example.com,ops,spf,pass\r\n" + // 10: thresholds come as three
	"gina@example.com,ops,spf,pass,gray,maybe\r\n" + // 11: bad threshold
	"hank@example.com,ops,spf,gray,gray,gray,extra\r\n" // 12: too many fields

func TestImportErrors(t *testing.T) {
	e := importEnv(t, "")
	f := e.writeFile("bad.csv", badCSV)
	before := e.addressRules()

	// The dry run shows every row, the good ones and the errors, and
	// changes nothing.
	r := e.run("address", "import", f, "--dry-run")
	if r.code != exitFailed {
		t.Fatalf("dry run of a file with errors: exit %d, want 1\n%v", r.code, r)
	}
	rows := map[string][]string{}
	for _, row := range table(r.stdout, "ROW") {
		rows[row[0]] = row
	}
	wantRows := map[string]string{
		"2":  "alice@example.com|ops|spf|gray|gray|gray|would add",
		"3":  "bob.smith@example.com|sales|auth|pass|gray|fail|would add",
		"4":  `error: "carol@example.com,ops" is not an email address`,
		"5":  "alice@example.com|sales|error: alice@example.com is listed twice (also row 2)",
		"6":  "existing@example.com|ops|error: existing@example.com already has an address rule",
		"7":  `error: "bob@" is not an email address`,
		"8":  `dave@example.com|ghost|error: unknown forwarding user "ghost"`,
		"9":  "error: security ip needs an IP list",
		"10": "error: 4 fields: give dkim, spf and dmarc together",
		"11": `gina@example.com|ops|error: --dmarc "maybe": want pass, gray or fail`,
		"12": "error: 7 fields: want email,user[,security[,dkim,spf,dmarc]]",
	}
	for num, want := range wantRows {
		got := strings.Join(rows[num][1:], "|")
		if !strings.HasPrefix(got, want) {
			t.Errorf("dry run row %s = %q, want %q", num, got, want)
		}
	}
	if len(rows) != len(wantRows) {
		t.Errorf("dry run shows rows %v, want 2..12\n%s", rows, r.stdout)
	}
	if !strings.Contains(r.stdout, "Dry run: 11 row(s), 2 would be added, 9 error(s). Nothing was changed.") {
		t.Errorf("dry run summary:\n%s", r.stdout)
	}
	if got := e.addressRules(); strings.Join(got, ",") != strings.Join(before, ",") {
		t.Fatalf("the dry run changed the store: %v", got)
	}

	// The real import exits 1, lists every error by row, imports nothing.
	r = e.run("address", "import", f)
	check(t, "import with errors", r, 1,
		`row 7: "bob@" is not an email address`,
		"row 5: alice@example.com is listed twice (also row 2)",
		"row 6: existing@example.com already has an address rule",
		`row 8: unknown forwarding user "ghost"`,
		"9 error(s); nothing was imported")
	if strings.Contains(r.stderr, "row 2:") || strings.Contains(r.stderr, "row 3:") {
		t.Errorf("good rows reported as errors:\n%s", r.stderr)
	}
	if got := e.addressRules(); strings.Join(got, ",") != strings.Join(before, ",") {
		t.Fatalf("an import with errors changed the store: %v", got)
	}
	if strings.Contains(e.run("log").stdout, "imported") {
		t.Errorf("a failed import was logged as an import")
	}

	// A file with only the bad address shows exactly the contract's text.
	one := e.writeFile("one.csv", "email,user\nok1@example.com,ops\nok2@example.com,ops\nok3@example.com,ops\nok4@example.com,ops\nok5@example.com,ops\nbob@,ops\n")
	r = e.run("address", "import", one)
	check(t, "one bad row", r, 1, `row 7: "bob@" is not an email address`)
	if got := e.addressRules(); len(got) != 1 {
		t.Fatalf("store changed: %v", got)
	}
}

func TestImportFileProblems(t *testing.T) {
	e := importEnv(t, "")
	for _, c := range []struct {
		name, content string
		code          int
		want          string
	}{
		{"empty file", "", 1, "the file is empty"},
		{"only a BOM and blank lines", "\xef\xbb\xbf\r\n\r\n", 1, "the file is empty"},
		{"header only", "email,user\r\n", 0, "no rows after the header; nothing to import"},
		{"no header", "alice@example.com,ops\n", 1, "row 1: header"},
		{"wrong header", "address,user\nalice@example.com,ops\n", 1, `column 1 is "address", expected "email"`},
		{"unterminated quote", "email,user\n\"alice@example.com,ops\n", 1, "row 2:"},
	} {
		p := e.writeFile("f.csv", c.content)
		r := e.run("address", "import", p)
		check(t, c.name, r, c.code, c.want)
		if c.code != 0 && !strings.Contains(r.stderr, p) {
			t.Errorf("%s: the error does not name the file:\n%v", c.name, r)
		}
	}
	check(t, "missing file", e.run("address", "import", filepath.Join(e.dir, "nope.csv")), 2, "nope.csv", "no such file")
	check(t, "no file", e.run("address", "import"), 2, "give exactly one FILE.csv")
	check(t, "two files", e.run("address", "import", "a.csv", "b.csv"), 2, "give exactly one FILE.csv")
	check(t, "bad flag", e.run("address", "import", "a.csv", "--dryrun"), 2, "-dryrun")
	if got := e.addressRules(); len(got) != 1 {
		t.Errorf("store changed: %v", got)
	}
}

func TestImportClean(t *testing.T) {
	e := importEnv(t, "")
	// BOM, CRLF, quoted fields, spaces around fields, a blank line, a
	// header in capitals, mixed-case addresses, rows of 2, 3 and 6 fields.
	content := "\xef\xbb\xbf" + "Email,User,Security,DKIM,SPF,DMARC\r\n" +
		"alice@example.com,ops\r\n" +
		"\"Bob@Example.COM\",\"sales\",\"auth\"\r\n" +
		"\r\n" +
		"  carol@example.com , ops , none , pass , pass , pass \r\n" +
		"\"dave@example.com\",\"ops\",\"google\",\"fail\",\"fail\",\"gray\"\r\n"
	f := e.writeFile("good.csv", content)

	r := e.run("address", "import", "--dry-run", f)
	check(t, "dry run", r, 0, "Dry run: 4 row(s), 4 would be added, 0 error(s). Nothing was changed.")
	if rows := table(r.stdout, "ROW"); len(rows) != 4 || rows[3][0] != "6" {
		t.Errorf("dry run rows %q (row numbers count the header and the blank line)", rows)
	}
	if got := e.addressRules(); len(got) != 1 {
		t.Fatalf("dry run changed the store: %v", got)
	}

	r = e.run("address", "import", f)
	check(t, "import", r, 0, "Imported 4 address rule(s)")
	want := "alice@example.com,bob@example.com,carol@example.com,dave@example.com,existing@example.com"
	if got := strings.Join(e.addressRules(), ","); got != want {
		t.Errorf("store has %s, want %s", got, want)
	}
	rules := e.rules()
	for pat, w := range map[string]string{
		"alice@example.com": "ops spf gray gray gray",
		"bob@example.com":   "sales auth gray gray gray",
		"carol@example.com": "ops none pass pass pass",
		"dave@example.com":  "ops google fail fail gray",
	} {
		rl := rules["address:"+pat]
		if got := strings.Join([]string{rl.User, rl.Security, rl.DKIM, rl.SPF, rl.DMARC}, " "); got != w {
			t.Errorf("%s stored as %q, want %q", pat, got, w)
		}
	}
	check(t, "log", e.run("log"), 0, "4 address rules imported from "+f)
	// The same file again: every row now exists, nothing changes.
	r = e.run("address", "import", f)
	check(t, "import again", r, 1, "row 2: alice@example.com already has an address rule", "4 error(s); nothing was imported")
}

// startSink runs Postfix's smtp-sink on a free loopback port, capturing
// each mail as a file in dir.
func startSink(t *testing.T, dir string) string {
	t.Helper()
	bin := testutil.NeedCmd(t, "smtp-sink")
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cmd := exec.Command(bin, "-u", "nobody", "-d", filepath.Join(dir, "%M."), addr, "10")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("smtp-sink did not start on %s", addr)
	return ""
}

func TestImportNotify(t *testing.T) {
	sinkDir := testutil.OpenDir(t)
	addr := startSink(t, sinkDir)
	e := importEnv(t, fmt.Sprintf("mail:\n  smtp: %s\n  from: smsmilter@example.com\n", addr))
	addrs := []string{"alice@example.com", "bob@example.org", "carol@example.net"}
	f := e.writeFile("n.csv", "email,user\n"+strings.Join(addrs, ",ops\n")+",ops\n")

	// A dry run and a failed import send nothing.
	check(t, "dry run", e.run("address", "import", f, "--dry-run", "--notify"), 0)
	bad := e.writeFile("bad.csv", "email,user\nzed@example.com,ops\nbob@,ops\n")
	check(t, "failed import", e.run("address", "import", bad, "--notify"), 1)
	time.Sleep(200 * time.Millisecond)
	if files, _ := filepath.Glob(filepath.Join(sinkDir, "*")); len(files) != 0 {
		t.Fatalf("%d mails sent without an import", len(files))
	}

	r := e.run("address", "import", f, "--notify")
	check(t, "import --notify", r, 0, "Imported 3 address rule(s)", "3 notice mail(s)")

	got := map[string]*mail.Message{}
	raw := map[string]string{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(sinkDir, "*"))
		if len(files) >= len(addrs) || time.Now().After(deadline) {
			for _, p := range files {
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				m, err := mail.ReadMessage(bytes.NewReader(data))
				if err != nil {
					t.Fatalf("captured mail %s does not parse: %v\n%s", p, err, data)
				}
				toAddr, err := mail.ParseAddress(m.Header.Get("To"))
				if err != nil {
					t.Fatalf("captured mail %s: To %q: %v", p, m.Header.Get("To"), err)
				}
				to := toAddr.Address
				if got[to] != nil {
					t.Errorf("two mails to %s", to)
				}
				got[to] = m
				raw[to] = string(data)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) != len(addrs) {
		t.Fatalf("smtp-sink got mails to %v, want one to each of %v", keys(got), addrs)
	}
	dec := new(mime.WordDecoder)
	for _, a := range addrs {
		m := got[a]
		if m == nil {
			t.Errorf("no mail to %s (got %v)", a, keys(got))
			continue
		}
		// smtp-sink records the envelope recipient as X-Rcpt-Args.
		if rc := m.Header.Get("X-Rcpt-Args"); rc != "<"+a+">" {
			t.Errorf("mail to %s: envelope recipient %q", a, rc)
		}
		subj, _ := dec.DecodeHeader(m.Header.Get("Subject"))
		if !strings.Contains(strings.ToLower(subj), "sms") {
			t.Errorf("mail to %s: subject %q does not say what it is about", a, subj)
		}
		if from := m.Header.Get("From"); !strings.Contains(from, "smsmilter@example.com") {
			t.Errorf("mail to %s: From %q", a, from)
		}
		if m.Header.Get("Message-Id") == "" || m.Header.Get("Date") == "" {
			t.Errorf("mail to %s lacks Message-ID or Date:\n%s", a, raw[a])
		}
		if m.Header.Get("Auto-Submitted") == "" {
			t.Errorf("mail to %s is not marked Auto-Submitted", a)
		}
		var body bytes.Buffer
		body.ReadFrom(m.Body)
		if !strings.Contains(body.String(), "@sms.example.com") {
			t.Errorf("mail to %s does not say where to write:\n%s", a, body.String())
		}
	}
	// Nothing is left in the mail queue: the CLI handed every mail over.
	st := e.store()
	if ms, err := st.ClaimMail(t.Context(), time.Now().Add(time.Hour), 10, time.Minute); err != nil || len(ms) != 0 {
		t.Errorf("mail left in the queue: %v %v", ms, err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// With the MTA down, the import still succeeds and the notices wait in
// the store's mail queue for the daemon.
func TestImportNotifyMTADown(t *testing.T) {
	port := testutil.FreePort(t) // nothing listens there
	e := importEnv(t, fmt.Sprintf("mail:\n  smtp: 127.0.0.1:%d\n  from: smsmilter@example.com\n", port))
	f := e.writeFile("n.csv", "email,user\nalice@example.com,ops\nbob@example.com,sales\n")
	r := e.run("address", "import", f, "--notify")
	check(t, "import --notify", r, 0, "Imported 2 address rule(s)", "Queued 2 notice mail(s)", "retries")
	st := e.store()
	ms, err := st.ClaimMail(t.Context(), time.Now().Add(24*time.Hour), 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var to []string
	for _, m := range ms {
		to = append(to, m.To...)
		if m.LastErr == "" {
			t.Errorf("mail to %v: no error recorded; the CLI did not try to hand it over", m.To)
		}
	}
	sort.Strings(to)
	if strings.Join(to, ",") != "alice@example.com,bob@example.com" {
		t.Errorf("mail queue holds mail to %v", to)
	}
	if got := e.addressRules(); len(got) != 3 {
		t.Errorf("store has %v", got)
	}
}
