package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/pop3"
	"github.com/smsmilter/smsmilter/internal/store"
)

// step is one CLI invocation of a table: its exit code and what its
// output must contain. Successful commands write to stdout, failed ones
// to stderr, and wantOut/wantErr say which stream is searched.
type step struct {
	name    string
	args    []string
	code    int
	wantOut []string
	wantErr []string
	noErr   bool // stderr must be empty
}

// runSteps runs the steps in order on one installation: later steps see
// what earlier ones added (duplicates).
func runSteps(t *testing.T, e *env, steps []step) {
	t.Helper()
	for _, s := range steps {
		r := e.run(s.args...)
		what := s.name + ": smsmilter " + strings.Join(s.args, " ")
		if r.code != s.code {
			t.Errorf("%s: exit %d, want %d\n%v", what, r.code, s.code, r)
			continue
		}
		for _, w := range s.wantOut {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%s: stdout lacks %q\n%v", what, w, r)
			}
		}
		for _, w := range s.wantErr {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%s: stderr lacks %q\n%v", what, w, r)
			}
		}
		if s.code != exitOK && r.stderr == "" && len(s.wantOut) == 0 {
			t.Errorf("%s: failed without a message on stderr\n%v", what, r)
		}
		if s.code == exitUsage && len(s.wantErr) > 0 && !strings.Contains(r.stderr, "--help") {
			t.Errorf("%s: a usage error should point at --help\n%v", what, r)
		}
		if s.noErr && r.stderr != "" {
			t.Errorf("%s: unexpected stderr\n%v", what, r)
		}
	}
}

func TestUserAdd(t *testing.T) {
	e := newEnv(t, "")
	runSteps(t, e, []step{
		{name: "good", args: []string{"user", "add", "ops", "--sender-id", "ACME", "--tps", "5", "--daily", "1000"}, code: 0,
			wantOut: []string{"Added forwarding user ops (sender ID ACME, 5 SMS/s, 1000 SMS/day).", "replies cannot reach an alphanumeric sender ID"}, noErr: true},
		{name: "numeric sender", args: []string{"user", "add", "sales", "--sender-id", "+447400123456"}, code: 0,
			wantOut: []string{"Added forwarding user sales (sender ID +447400123456)."}, noErr: true},
		{name: "options first", args: []string{"user", "add", "--sender-id=Shop.Co", "--daily=10", "shop"}, code: 0,
			wantOut: []string{"Added forwarding user shop"}},
		{name: "duplicate", args: []string{"user", "add", "ops", "--sender-id", "OTHER"}, code: 1,
			wantErr: []string{`forwarding user "ops" already exists`}},
		{name: "sender ID too long", args: []string{"user", "add", "x", "--sender-id", "TOOLONGNAME12"}, code: 2,
			wantErr: []string{`sender ID "TOOLONGNAME12"`, "11"}},
		{name: "sender ID number too long", args: []string{"user", "add", "x", "--sender-id", "+1234567890123456"}, code: 2,
			wantErr: []string{"at most 15 digits"}},
		{name: "sender ID bad characters", args: []string{"user", "add", "x", "--sender-id", "AC/ME"}, code: 2,
			wantErr: []string{`sender ID "AC/ME"`}},
		{name: "sender ID plus letters", args: []string{"user", "add", "x", "--sender-id", "+ACME"}, code: 2,
			wantErr: []string{`sender ID "+ACME"`}},
		{name: "no sender ID", args: []string{"user", "add", "x"}, code: 2,
			wantErr: []string{"a sender ID is needed (--sender-id)"}},
		{name: "bad user name", args: []string{"user", "add", "bad name", "--sender-id", "ACME"}, code: 2,
			wantErr: []string{`user name "bad name"`}},
		{name: "no name", args: []string{"user", "add", "--sender-id", "ACME"}, code: 2,
			wantErr: []string{"give exactly one user NAME"}},
		{name: "two names", args: []string{"user", "add", "a", "b", "--sender-id", "ACME"}, code: 2,
			wantErr: []string{"give exactly one user NAME"}},
		{name: "unknown flag", args: []string{"user", "add", "x", "--sender-id", "ACME", "--bogus"}, code: 2,
			wantErr: []string{"flag provided but not defined: -bogus"}},
		{name: "bad tps", args: []string{"user", "add", "x", "--sender-id", "ACME", "--tps", "fast"}, code: 2,
			wantErr: []string{"-tps"}},
		{name: "negative tps", args: []string{"user", "add", "x", "--sender-id", "ACME", "--tps", "-1"}, code: 2,
			wantErr: []string{"--tps -1: must not be negative"}},
		{name: "negative daily", args: []string{"user", "add", "x", "--sender-id", "ACME", "--daily", "-5"}, code: 2,
			wantErr: []string{"--daily -5: must not be negative"}},
		{name: "flag without value", args: []string{"user", "add", "x", "--sender-id"}, code: 2,
			wantErr: []string{"flag needs an argument"}},
	})

	st := e.store()
	users, err := st.ListUsers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]store.User{}
	for _, u := range users {
		got[u.Name] = u
	}
	if len(got) != 3 {
		t.Errorf("store has users %v, want ops, sales, shop", users)
	}
	if u := got["ops"]; u.SenderID != "ACME" || u.TPS != 5 || u.Daily != 1000 {
		t.Errorf("ops stored as %+v (the duplicate must not change it)", u)
	}
	if u := got["shop"]; u.SenderID != "Shop.Co" || u.Daily != 10 {
		t.Errorf("shop stored as %+v", u)
	}
}

var tokenRE = regexp.MustCompile(`smsmilter-verification=([0-9a-f]{32})\b`)

func TestDomainAdd(t *testing.T) {
	e := newEnv(t, "")
	e.must("user", "add", "ops", "--sender-id", "ACME")

	r := e.must("domain", "add", "example.com", "--user", "ops")
	m := tokenRE.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("domain add does not print smsmilter-verification=<32 hex>:\n%v", r)
	}
	for _, w := range []string{"not active until verified", "smsmilter domain verify example.com"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("domain add output lacks %q:\n%v", w, r)
		}
	}
	r2 := e.must("domain", "add", "Example.ORG.", "--user", "ops", "--dkim", "pass")
	m2 := tokenRE.FindStringSubmatch(r2.stdout)
	if m2 == nil || m2[1] == m[1] {
		t.Errorf("second domain's token %v is missing or equal to the first's %s", m2, m[1])
	}

	runSteps(t, e, []step{
		{name: "duplicate", args: []string{"domain", "add", "EXAMPLE.com", "--user", "ops"}, code: 1,
			wantErr: []string{"domain rule example.com already exists"}},
		{name: "security ip without ips", args: []string{"domain", "add", "example.net", "--user", "ops", "--security", "ip"}, code: 2,
			wantErr: []string{"security ip needs the servers' addresses: --ips CIDR,..."}},
		{name: "security ip", args: []string{"domain", "add", "example.net", "--user", "ops", "--security", "ip", "--ips", "192.0.2.0/24, 2001:db8::/32"}, code: 0,
			wantOut: []string{"security ip (192.0.2.0/24, 2001:db8::/32)", "smsmilter-verification="}},
		{name: "ips without security ip", args: []string{"domain", "add", "example.info", "--user", "ops", "--ips", "192.0.2.0/24"}, code: 2,
			wantErr: []string{"--ips is only used with --security ip"}},
		{name: "bad cidr", args: []string{"domain", "add", "example.info", "--user", "ops", "--security", "ip", "--ips", "192.0.2.0/33"}, code: 2,
			wantErr: []string{`"192.0.2.0/33" is not an IP address or CIDR`}},
		{name: "unknown security", args: []string{"domain", "add", "example.info", "--user", "ops", "--security", "dane"}, code: 2,
			wantErr: []string{`unknown security type "dane"`}},
		{name: "unknown user", args: []string{"domain", "add", "example.info", "--user", "ghost"}, code: 1,
			wantErr: []string{`unknown forwarding user "ghost"`, "smsmilter user add ghost"}},
		{name: "no user", args: []string{"domain", "add", "example.info"}, code: 2,
			wantErr: []string{"a forwarding user is needed (--user NAME)"}},
		{name: "not a domain", args: []string{"domain", "add", "localhost", "--user", "ops"}, code: 2,
			wantErr: []string{`"localhost" is not a domain name`}},
		{name: "an address, not a domain", args: []string{"domain", "add", "bob@example.info", "--user", "ops"}, code: 2,
			wantErr: []string{"is not a domain name"}},
		{name: "bad threshold", args: []string{"domain", "add", "example.info", "--user", "ops", "--dmarc", "strict"}, code: 2,
			wantErr: []string{`--dmarc "strict": want pass, gray or fail`}},
		{name: "no domain", args: []string{"domain", "add", "--user", "ops"}, code: 2,
			wantErr: []string{"give exactly one DOMAIN"}},
	})

	rules := e.rules()
	d := rules["domain:example.com"]
	if d.Token != m[1] || d.Verified || d.Security != "spf" || d.DKIM != "gray" || d.SPF != "gray" || d.DMARC != "gray" {
		t.Errorf("example.com stored as %+v; want the printed token %s, not verified, spf, gray thresholds", d, m[1])
	}
	if o := rules["domain:example.org"]; o.Token != m2[1] || o.DKIM != "pass" {
		t.Errorf("example.org stored as %+v", o)
	}
	if n := rules["domain:example.net"]; n.Security != "ip" || strings.Join(n.IPs, ",") != "192.0.2.0/24,2001:db8::/32" {
		t.Errorf("example.net stored as %+v", n)
	}
	if len(rules) != 3 {
		t.Errorf("store has rules %v", rules)
	}
}

func TestAddressAdd(t *testing.T) {
	e := newEnv(t, "")
	e.must("user", "add", "ops", "--sender-id", "ACME")
	runSteps(t, e, []step{
		{name: "good", args: []string{"address", "add", "Alice@Example.com", "--user", "ops"}, code: 0,
			wantOut: []string{"Added address rule alice@example.com for user ops: security spf, thresholds dkim gray, spf gray, dmarc gray."}, noErr: true},
		{name: "duplicate (other case)", args: []string{"address", "add", "ALICE@example.COM", "--user", "ops"}, code: 1,
			wantErr: []string{"address rule alice@example.com already exists"}},
		{name: "unknown user", args: []string{"address", "add", "bob@example.com", "--user", "ghost"}, code: 1,
			wantErr: []string{`unknown forwarding user "ghost"`}},
		{name: "malformed", args: []string{"address", "add", "bob@", "--user", "ops"}, code: 2,
			wantErr: []string{`"bob@" is not an email address`}},
		{name: "no local part", args: []string{"address", "add", "@example.com", "--user", "ops"}, code: 2,
			wantErr: []string{`"@example.com" is not an email address`}},
		{name: "display name", args: []string{"address", "add", "Bob <bob@example.com>", "--user", "ops"}, code: 2,
			wantErr: []string{"is not an email address"}},
		{name: "bad cidr host bits", args: []string{"address", "add", "carol@example.com", "--user", "ops", "--security", "ip", "--ips", "10.0.0.1/8"}, code: 2,
			wantErr: []string{`"10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`}},
		{name: "bad cidr", args: []string{"address", "add", "carol@example.com", "--user", "ops", "--security", "ip", "--ips", "192.0.2.0/24,999.1.1.1"}, code: 2,
			wantErr: []string{`"999.1.1.1" is not an IP address or CIDR`}},
		{name: "bad threshold", args: []string{"address", "add", "carol@example.com", "--user", "ops", "--dkim", "maybe"}, code: 2,
			wantErr: []string{`--dkim "maybe": want pass, gray or fail`}},
		{name: "empty threshold is the default", args: []string{"address", "add", "carol@example.com", "--user", "ops", "--spf", ""}, code: 0,
			wantOut: []string{"spf gray"}},
		{name: "thresholds any case", args: []string{"address", "add", "dave@example.com", "--user", "ops", "--security", "AUTH", "--spf", "PASS", "--dmarc", "fail"}, code: 0,
			wantOut: []string{"security auth, thresholds dkim gray, spf pass, dmarc fail"}},
		{name: "security ip", args: []string{"address", "add", "erin@example.com", "--user", "ops", "--security", "ip", "--ips", "192.0.2.7"}, code: 0,
			wantOut: []string{"security ip (192.0.2.7/32)"}},
		{name: "no address", args: []string{"address", "add", "--user", "ops"}, code: 2,
			wantErr: []string{"give exactly one ADDRESS"}},
	})
	rules := e.rules()
	if len(rules) != 4 {
		t.Errorf("store has %d rules, want 4: %v", len(rules), rules)
	}
	if r := rules["address:dave@example.com"]; r.Security != "auth" || r.SPF != "pass" || r.DMARC != "fail" || r.DKIM != "gray" {
		t.Errorf("dave stored as %+v", r)
	}
	if r := rules["address:erin@example.com"]; strings.Join(r.IPs, ",") != "192.0.2.7/32" {
		t.Errorf("erin stored as %+v", r)
	}
}

func TestIPAdd(t *testing.T) {
	e := newEnv(t, "")
	e.must("user", "add", "ops", "--sender-id", "ACME")
	runSteps(t, e, []step{
		{name: "good", args: []string{"ip", "add", "192.0.2.0/24", "--user", "ops"}, code: 0,
			wantOut: []string{"Added ip rule 192.0.2.0/24 for user ops", "thresholds dkim fail, spf fail, dmarc fail"}, noErr: true},
		{name: "single IPv6 address", args: []string{"ip", "add", "2001:DB8::1", "--user", "ops", "--spf", "gray"}, code: 0,
			wantOut: []string{"Added ip rule 2001:db8::1/128", "spf gray"}},
		{name: "duplicate", args: []string{"ip", "add", "192.0.2.0/24", "--user", "ops"}, code: 1,
			wantErr: []string{"ip rule 192.0.2.0/24 already exists"}},
		{name: "host bits", args: []string{"ip", "add", "192.0.2.1/24", "--user", "ops"}, code: 2,
			wantErr: []string{"did you mean 192.0.2.0/24?"}},
		{name: "not an ip", args: []string{"ip", "add", "mx.example.com", "--user", "ops"}, code: 2,
			wantErr: []string{`"mx.example.com" is not an IP address or CIDR`}},
		{name: "no security flag", args: []string{"ip", "add", "198.51.100.0/24", "--user", "ops", "--security", "spf"}, code: 2,
			wantErr: []string{"flag provided but not defined: -security"}},
		{name: "unknown user", args: []string{"ip", "add", "198.51.100.0/24", "--user", "ghost"}, code: 1,
			wantErr: []string{`unknown forwarding user "ghost"`}},
		{name: "bad threshold", args: []string{"ip", "add", "198.51.100.0/24", "--user", "ops", "--dkim", "grey"}, code: 2,
			wantErr: []string{`--dkim "grey": want pass, gray or fail`}},
		{name: "no cidr", args: []string{"ip", "add", "--user", "ops"}, code: 2,
			wantErr: []string{"give exactly one"}},
	})
	rules := e.rules()
	if r := rules["ip:192.0.2.0/24"]; r.Security != "ip" || r.DKIM != "fail" || r.SPF != "fail" || r.DMARC != "fail" {
		t.Errorf("ip rule stored as %+v", r)
	}
	if r := rules["ip:2001:db8::1/128"]; r.SPF != "gray" || r.DKIM != "fail" {
		t.Errorf("IPv6 rule stored as %+v", r)
	}
	if len(rules) != 2 {
		t.Errorf("store has rules %v", rules)
	}
}

// table reads a tabwriter table into rows of fields, by its header line.
func table(out, header string) [][]string {
	var rows [][]string
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, header):
			in = true
		case in && strings.TrimSpace(line) == "":
			return rows
		case in:
			rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
		}
	}
	return rows
}

func TestListLogAndQueue(t *testing.T) {
	e := newEnv(t, "")
	e.must("user", "add", "ops", "--sender-id", "ACME", "--tps", "2.5", "--daily", "100")
	e.must("user", "add", "sales", "--sender-id", "+447400123456")
	e.must("address", "add", "alice@example.com", "--user", "ops", "--security", "auth")
	e.must("domain", "add", "example.com", "--user", "sales", "--security", "ip", "--ips", "192.0.2.0/24")
	e.must("ip", "add", "198.51.100.0/24", "--user", "ops")

	r := e.must("list")
	users := table(r.stdout, "USER")
	wantUsers := [][]string{{"ops", "ACME", "2.5", "100"}, {"sales", "+447400123456", "-", "-"}}
	if !equalRows(users, wantUsers) {
		t.Errorf("list users = %q, want %q\n%s", users, wantUsers, r.stdout)
	}
	rules := table(r.stdout, "KIND")
	wantRules := [][]string{
		{"address", "alice@example.com", "ops", "auth", "gray", "gray", "gray", "active"},
		{"domain", "example.com", "sales", "ip 192.0.2.0/24", "gray", "gray", "gray", "not verified"},
		{"ip", "198.51.100.0/24", "ops", "ip", "fail", "fail", "fail", "active"},
	}
	if !equalRows(sortRows(rules), wantRules) {
		t.Errorf("list rules = %q, want %q\n%s", rules, wantRules, r.stdout)
	}
	check(t, "list with an argument", e.run("list", "extra"), 2, "list takes no arguments")
	check(t, "log with an argument", e.run("log", "extra"), 2, "log takes no arguments")
	check(t, "queue with an argument", e.run("queue", "extra"), 2, "queue takes no arguments")

	// log: the commands above left registry events.
	r = e.must("log")
	for _, w := range []string{
		"registry  forwarding user ops added (sender ID ACME)  [user=ops]",
		"address rule alice@example.com added for user ops",
		"domain rule example.com added for user sales",
		"ip rule 198.51.100.0/24 added for user ops",
	} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("log lacks %q:\n%s", w, r.stdout)
		}
	}
	r = e.must("log", "--json")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 5 {
		t.Fatalf("log --json printed %d lines, want 5:\n%s", len(lines), r.stdout)
	}
	var first struct {
		ID      int64             `json:"id"`
		Time    string            `json:"time"`
		Kind    string            `json:"kind"`
		Message string            `json:"message"`
		Fields  map[string]string `json:"fields"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("log --json line %q: %v", lines[0], err)
	}
	if first.Kind != "registry" || first.Fields["user"] != "ops" || !strings.Contains(first.Message, "forwarding user ops added") {
		t.Errorf("first event = %+v", first)
	}
	if ts, err := time.Parse(time.RFC3339Nano, first.Time); err != nil || time.Since(ts) > time.Minute {
		t.Errorf("event time %q: %v", first.Time, err)
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Errorf("log --json line is not JSON: %q", l)
		}
	}

	// Events the daemon writes show up the same way, filtered by kind.
	st := e.store()
	ctx := context.Background()
	st.LogEvent(ctx, store.Event{Time: time.Now(), Kind: store.EventRefused, Message: "SMS refused for mallory@example.net", Fields: map[string]string{"sender": "mallory@example.net"}})
	r = e.must("log", "--kind", "refused")
	if !strings.Contains(r.stdout, "refused   SMS refused for mallory@example.net  [sender=mallory@example.net]") || strings.Contains(r.stdout, "registry") {
		t.Errorf("log --kind refused:\n%s", r.stdout)
	}
	r = e.must("log", "--limit", "2", "--json")
	if n := strings.Count(r.stdout, "\n"); n != 2 || !strings.Contains(r.stdout, "mallory") {
		t.Errorf("log --limit 2 printed %d lines (want the newest 2):\n%s", n, r.stdout)
	}
	check(t, "log --since", e.run("log", "--since", "1h"), 0, "mallory")
	check(t, "log bad --since", e.run("log", "--since", "yesterday"), 2, "-since")
	check(t, "log unknown --kind", e.run("log", "--kind", "refusd"), 2, `--kind "refusd": want one of accepted, refused`)
	check(t, "log negative --limit", e.run("log", "--limit", "-1"), 2, "must not be negative")

	// queue: jobs enqueued through the store API, as the milter does.
	check(t, "empty queue", e.run("queue"), 0, "queued 0, sending 0, sent 0, delivered 0, failed 0")
	now := time.Now()
	res, err := st.Enqueue(ctx, []store.Job{
		{DedupeKey: "m1|+447400123456", MessageID: "<m1@example.com>", Sender: "alice@example.com", User: "ops", SenderID: "ACME",
			To: "+447400123456", Text: "hello", Encoding: "gsm7", Parts: 1, Created: now, NextTry: now},
		{DedupeKey: "m1|+819012345678", MessageID: "<m1@example.com>", Sender: "alice@example.com", User: "ops", SenderID: "ACME",
			To: "+819012345678", Text: "こんにちは", Encoding: "ucs2", Parts: 1, Created: now, NextTry: now},
	}, time.Minute)
	if err != nil || len(res.IDs) != 2 {
		t.Fatalf("Enqueue: %v %+v", err, res)
	}
	if err := st.Fail(ctx, res.IDs[1], "no route for +81"); err != nil {
		t.Fatal(err)
	}
	r = e.must("queue")
	jobs := table(r.stdout, "ID")
	if len(jobs) != 2 {
		t.Fatalf("queue shows %d jobs, want 2:\n%s", len(jobs), r.stdout)
	}
	// Newest first.
	if jobs[0][1] != "failed" || jobs[0][2] != "+819012345678" || !strings.Contains(r.stdout, "no route for +81") {
		t.Errorf("queue row %q, want the failed +81 job with its error\n%s", jobs[0], r.stdout)
	}
	if jobs[1][1] != "queued" || jobs[1][2] != "+447400123456" || jobs[1][3] != "ACME" || jobs[1][4] != "ops" {
		t.Errorf("queue row %q\n%s", jobs[1], r.stdout)
	}
	if !strings.Contains(r.stdout, "queued 1, sending 0, sent 0, delivered 0, failed 1") {
		t.Errorf("queue summary missing:\n%s", r.stdout)
	}
	r = e.must("queue", "--json")
	var js []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var j map[string]any
		if err := json.Unmarshal([]byte(l), &j); err != nil {
			t.Fatalf("queue --json line %q: %v", l, err)
		}
		js = append(js, j)
	}
	if len(js) != 2 {
		t.Fatalf("queue --json printed %d jobs", len(js))
	}
	if js[1]["to"] != "+447400123456" || js[1]["state"] != "queued" || js[1]["from"] != "ACME" || js[1]["text"] != "hello" ||
		js[1]["encoding"] != "gsm7" || js[1]["parts"] != float64(1) || js[1]["id"] != float64(res.IDs[0]) || js[1]["message_id"] != "<m1@example.com>" {
		t.Errorf("queue --json job = %v", js[1])
	}
	if js[0]["state"] != "failed" || js[0]["last_error"] != "no route for +81" || js[0]["text"] != "こんにちは" {
		t.Errorf("queue --json failed job = %v", js[0])
	}
	r = e.must("queue", "--state", "failed", "--json")
	if strings.Count(r.stdout, "\n") != 1 || !strings.Contains(r.stdout, "+819012345678") {
		t.Errorf("queue --state failed:\n%s", r.stdout)
	}
	check(t, "queue bad flag", e.run("queue", "--jsn"), 2, "flag provided but not defined: -jsn")
	check(t, "queue unknown --state", e.run("queue", "--state", "pending"), 2, `--state "pending": want one of queued, sending, sent, delivered, failed`)
	check(t, "queue --limit", e.run("queue", "--limit", "1", "--json"), 0, "+819012345678")
}

func equalRows(a, b [][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.Join(a[i], "|") != strings.Join(b[i], "|") {
			return false
		}
	}
	return true
}

func sortRows(rows [][]string) [][]string {
	out := append([][]string(nil), rows...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if strings.Join(out[j], "|") < strings.Join(out[i], "|") {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestMailboxPasswd(t *testing.T) {
	t.Parallel() // bcrypt takes its time
	e := newEnv(t, "")
	st := e.store()
	hashOf := func(addr string) string {
		t.Helper()
		h, err := st.MailboxPassword(context.Background(), addr)
		if err != nil {
			t.Fatalf("MailboxPassword(%s): %v", addr, err)
		}
		return h
	}

	r := e.runIn("s3cret pw\nsecond line\n", "mailbox", "passwd", "Alice@Example.com")
	check(t, "passwd", r, 0, "Password set for mailbox alice@example.com")
	h := hashOf("alice@example.com")
	if strings.Contains(h, "s3cret") {
		t.Fatalf("the password is stored in clear: %q", h)
	}
	if !pop3.CheckPassword(h, "s3cret pw") {
		t.Errorf("the stored hash does not verify the first line of stdin")
	}
	// bcrypt is slow (more so under -race): a few checks only.
	for _, wrong := range []string{"s3cret pw\n", "second line"} {
		if pop3.CheckPassword(h, wrong) {
			t.Errorf("the stored hash also verifies %q", wrong)
		}
	}

	// CRLF is trimmed too; spaces inside and around are part of the password.
	check(t, "passwd CRLF", e.runIn("  pw2 \r\n", "mailbox", "passwd", "bob@example.com"), 0)
	if h := hashOf("bob@example.com"); !pop3.CheckPassword(h, "  pw2 ") || pop3.CheckPassword(h, "pw2") {
		t.Errorf("CRLF password not stored as %q", "  pw2 ")
	}
	// No newline at all: the whole input.
	check(t, "passwd without newline", e.runIn("pw3", "mailbox", "passwd", "carol@example.com"), 0)
	if !pop3.CheckPassword(hashOf("carol@example.com"), "pw3") {
		t.Errorf("password without a newline not stored")
	}
	// Changing a password replaces the old one.
	check(t, "passwd again", e.runIn("new\n", "mailbox", "passwd", "alice@example.com"), 0)
	newHash := hashOf("alice@example.com")
	if newHash == h || !pop3.CheckPassword(newHash, "new") {
		t.Errorf("the new password did not replace the old one")
	}

	for _, c := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"empty stdin", "", []string{"alice@example.com"}, "the password (first line of stdin) is empty"},
		{"empty first line", "\nsecond\n", []string{"alice@example.com"}, "the password (first line of stdin) is empty"},
		{"NUL", "a\x00b\n", []string{"alice@example.com"}, "NUL"},
		{"too long for bcrypt", strings.Repeat("a", 73) + "\n", []string{"alice@example.com"}, "72"},
		{"bad address", "pw\n", []string{"alice@"}, `"alice@" is not an email address`},
		{"no address", "pw\n", nil, "give exactly one mailbox ADDRESS"},
	} {
		r := e.runIn(c.stdin, append([]string{"mailbox", "passwd"}, c.args...)...)
		check(t, c.name, r, 2, c.want)
	}
	if hashOf("alice@example.com") != newHash {
		t.Errorf("a failed passwd changed the password")
	}
	check(t, "log", e.run("log"), 0, "POP3 password set for alice@example.com")
	if strings.Contains(e.run("log", "--json").stdout, "new") {
		t.Errorf("the event log shows the password")
	}
}

func TestCheckConfig(t *testing.T) {
	e := newEnv(t, "")
	r := e.run("check-config")
	check(t, "good config", r, 0, e.cfgPath+": OK")
	check(t, "check-config with an argument", e.run("check-config", "x"), 2, "takes no arguments")

	// Examples shipped with the product are good too.
	for _, ex := range []string{"../../examples/quickstart.yaml", "../../examples/smsmilter.yaml"} {
		if _, err := os.Stat(ex); err == nil {
			check(t, ex, runCLI(t, "", "check-config", "--config", ex), 0, "OK")
		}
	}

	bad := e.writeFile("bad.yaml", `sms_domains: [sms.example.com]
state_dir: `+e.stateDir+`
bogus_key: 1
milter:
  timeout: soon
  max_message_size: lots
dns:
  resolver: "not a host port"
`)
	r = runCLI(t, "", "check-config", "--config", bad)
	if r.code != exitUsage {
		t.Fatalf("broken config: exit %d, want 2\n%v", r.code, r)
	}
	lineRE := regexp.MustCompile(`^` + regexp.QuoteMeta(bad) + `:(\d+): \S`)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		m := lineRE.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("not a FILE:LINE: message line: %q", l)
			continue
		}
		lines = append(lines, m[1])
	}
	if strings.Join(lines, ",") != "3,5,6,8" {
		t.Errorf("problems on lines %v, want 3,5,6,8:\n%s", lines, r.stderr)
	}
	for _, w := range []string{`unknown key "bogus_key"`, "milter.timeout", "milter.max_message_size", "dns.resolver"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("check-config output lacks %q:\n%s", w, r.stderr)
		}
	}
	if r.stdout != "" {
		t.Errorf("a broken config printed on stdout: %q", r.stdout)
	}
	// Every command refuses a broken config with exit 2 and the same lines.
	for _, args := range [][]string{{"list"}, {"user", "add", "ops", "--sender-id", "ACME"}, {"log"}, {"queue"}, {"serve"}} {
		r := runCLI(t, "", append(args, "--config", bad)...)
		check(t, strings.Join(args, " ")+" with a broken config", r, 2, bad+":3: ")
	}
	if _, err := os.Stat(e.stateDir); err == nil {
		t.Errorf("a command with a broken config created the state directory")
	}
}

func TestMissingConfig(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.yaml")
	csv := filepath.Join(dir, "a.csv")
	os.WriteFile(csv, []byte("email,user\nalice@example.com,ops\n"), 0o644)
	for _, args := range [][]string{{"check-config"}, {"serve"}, {"list"}, {"user", "add", "ops", "--sender-id", "ACME"}, {"domain", "verify", "example.com"}, {"log"},
		{"address", "import", csv}, {"mailbox", "passwd", "a@example.com"}, {"explain", "testdata/plain.eml", "--client-ip", "192.0.2.1"}} {
		r := runCLI(t, "pw\n", append(args, "--config", missing)...)
		what := strings.Join(args, " ") + " with a missing config"
		check(t, what, r, 2, missing, "no such file or directory", "--config")
	}
	// The default path is named when --config is not given (it does not
	// exist on a test machine, or is not ours to read: skip if it does).
	if _, err := os.Stat(defaultConfigPath); err != nil {
		check(t, "default config", runCLI(t, "", "list"), 2, defaultConfigPath)
	}
	check(t, "--config without a file", runCLI(t, "", "list", "--config"), 2, "--config needs a file name")
}

func TestConfigFlagPosition(t *testing.T) {
	e := newEnv(t, "")
	for i, args := range [][]string{
		{"--config", e.cfgPath, "user", "add", "u1", "--sender-id", "ACME"},
		{"user", "add", "u2", "--sender-id", "ACME", "--config", e.cfgPath},
		{"user", "add", "--config", e.cfgPath, "u3", "--sender-id", "ACME"},
		{"--config=" + e.cfgPath, "user", "add", "u4", "--sender-id", "ACME"},
		{"user", "add", "u5", "--sender-id", "ACME", "--config=" + e.cfgPath},
		{"-config", e.cfgPath, "user", "add", "u6", "--sender-id", "ACME"},
	} {
		check(t, strings.Join(args, " "), runCLI(t, "", args...), 0, "Added forwarding user u"+string(rune('1'+i)))
	}
	r := runCLI(t, "", "list", "--config", e.cfgPath)
	for i := 1; i <= 6; i++ {
		if !strings.Contains(r.stdout, "u"+string(rune('0'+i))+" ") {
			t.Errorf("list lacks u%d:\n%s", i, r.stdout)
		}
	}
	// Another config is another store.
	e2 := newEnv(t, "")
	if r := runCLI(t, "", "list", "--config", e2.cfgPath); strings.Contains(r.stdout, "u1") {
		t.Errorf("the second config's store has the first one's users:\n%s", r.stdout)
	}
}

func TestUnknownCommandsAndHelp(t *testing.T) {
	e := newEnv(t, "")
	for _, args := range [][]string{{"frobnicate"}, {"user"}, {"user", "remove", "ops"}, {"domain", "delete", "x.com"}, {"--frob"}} {
		r := e.run(args...)
		check(t, strings.Join(args, " "), r, 2, "unknown command", "smsmilter --help")
	}
	r := runCLI(t, "")
	check(t, "no command", r, 2, "Usage: smsmilter [--config FILE] COMMAND")

	for _, h := range []string{"--help", "-h", "help"} {
		r := runCLI(t, "", h)
		check(t, h, r, 0, "Usage: smsmilter [--config FILE] COMMAND", "user add", "address import", "explain")
		if strings.Contains(r.stdout, "\n  plugin") {
			t.Errorf("%s lists the internal plugin command:\n%s", h, r.stdout)
		}
	}
	check(t, "version", runCLI(t, "", "version"), 0, "smsmilter ")

	// Every command's --help prints its usage and exits 0, without a
	// config file (none exists at the default path here).
	for _, c := range commands() {
		words := strings.Fields(c.name)
		for _, h := range []string{"--help", "-h"} {
			r := runCLI(t, "", append(words, h)...)
			check(t, c.name+" "+h, r, 0, "Usage: smsmilter [--config FILE] "+c.name)
			if r.stderr != "" {
				t.Errorf("%s %s wrote to stderr: %q", c.name, h, r.stderr)
			}
		}
		// Help after other arguments, and with a missing config, still works.
		r := runCLI(t, "", append(append(words, "x", "--help"), "--config", "/nonexistent.yaml")...)
		check(t, c.name+" x --help", r, 0, "Usage:")
		check(t, "help "+c.name, runCLI(t, "", append([]string{"help"}, words...)...), 0, "Usage: smsmilter [--config FILE] "+c.name)
		if c.summary != "" && c.help == "" && c.args != "" {
			t.Errorf("%s has arguments %q but no help text", c.name, c.args)
		}
	}
	// The command list in --help names every public command.
	r = runCLI(t, "", "--help")
	for _, c := range commands() {
		if c.summary != "" && !strings.Contains(r.stdout, "  "+c.name+" ") {
			t.Errorf("--help does not list %s", c.name)
		}
	}
}

// An admin running the CLI as root must not leave store files the daemon
// (its own user, owner of state_dir) cannot write.
func TestRootKeepsStoreOwnedByStateDirOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	e := newEnv(t, "")
	os.MkdirAll(e.stateDir, 0o750)
	const nobody = 65534
	if err := os.Chown(e.stateDir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	e.must("user", "add", "ops", "--sender-id", "ACME")
	ents, _ := os.ReadDir(e.stateDir)
	if len(ents) == 0 {
		t.Fatal("no store files")
	}
	for _, ent := range ents {
		fi, _ := ent.Info()
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody {
			t.Errorf("%s is owned by uid %d, not the state directory's owner", ent.Name(), st.Uid)
		}
	}
}
