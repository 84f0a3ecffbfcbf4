package pop3

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// Real POP3 clients against the server: curl and Python's poplib.

func runCurl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	curl := testutil.NeedCmd(t, "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, append([]string{"-sS", "--max-time", "20"}, args...)...).CombinedOutput()
	return string(out), err
}

func mustCurl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCurl(t, args...)
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return out
}

func TestCurl(t *testing.T) {
	testutil.NeedCmd(t, "curl")
	ts := startServer(t, true, nil)
	ids := ts.deliver(t, alice, testMsgs...)
	url := "pop3://" + ts.addr + "/"
	cred := alice + ":" + alicePW

	var wantList strings.Builder
	for i, m := range testMsgs {
		fmt.Fprintf(&wantList, "%d %d\r\n", i+1, len(wire(m)))
	}
	// curl prefers AUTH PLAIN (CAPA offers it), with and without an
	// initial response; AUTH=+USER... is not a curl option, so USER/PASS
	// is what poplib tests below.
	for _, extra := range [][]string{nil, {"--sasl-ir"}} {
		if got := mustCurl(t, append(extra, url, "-u", cred)...); got != wantList.String() {
			t.Errorf("curl LIST %v = %q, want %q", extra, got, wantList.String())
		}
	}
	if got := mustCurl(t, url+"1", "-u", cred); got != wire(testMsgs[0]) {
		t.Errorf("curl RETR 1 = %q, want %q", got, wire(testMsgs[0]))
	}
	if got := mustCurl(t, url+"3", "-u", cred); got != wire(testMsgs[2]) {
		t.Errorf("curl RETR 3 = %q, want %q", got, wire(testMsgs[2]))
	}
	uidl := mustCurl(t, url, "-u", cred, "-X", "UIDL")
	for i, id := range ids {
		if !strings.Contains(uidl, fmt.Sprintf("%d %s\r\n", i+1, id)) {
			t.Errorf("curl UIDL = %q, missing %d %s", uidl, i+1, id)
		}
	}
	if got := mustCurl(t, url, "-u", cred, "-X", "TOP 2 1"); got != "Subject: two\r\n\r\nline1\r\n" {
		t.Errorf("curl TOP 2 1 = %q", got)
	}
	if out, err := runCurl(t, url, "-u", alice+":wrong"); err == nil {
		t.Errorf("curl with a wrong password succeeded: %q", out)
	}

	// STLS with --ssl-reqd, and implicit TLS with pop3s://.
	if got := mustCurl(t, "--ssl-reqd", "-k", url, "-u", cred); got != wantList.String() {
		t.Errorf("curl --ssl-reqd LIST = %q", got)
	}
	if got := mustCurl(t, "--cacert", ts.cert.certFile, "pop3s://localhost:"+port(ts.tlsAddr)+"/2", "-u", cred); got != wire(testMsgs[1]) {
		t.Errorf("curl pop3s RETR 2 = %q", got)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "tls=true") || !strings.Contains(logs, `method="AUTH PLAIN"`) {
		t.Errorf("no AUTH PLAIN or no TLS login in the log:\n%s", logs)
	}

	// DELE through curl: gone after its QUIT.
	mustCurl(t, url+"1", "-u", cred, "-X", "DELE", "-I")
	waitUnlocked(t, ts)
	if n := listCount(t, ts); n != 2 {
		t.Errorf("after curl DELE: %d messages, want 2", n)
	}
}

// TestCurlNonLoopback: when the connection does not count as secure, curl
// without TLS cannot log in, with --ssl-reqd (STLS) it can.
func TestCurlNonLoopback(t *testing.T) {
	testutil.NeedCmd(t, "curl")
	ts := startServer(t, true, func(c *Config) { c.IsSecure = func(net.Addr) bool { return false } })
	ts.deliver(t, alice, testMsgs[0])
	url := "pop3://" + ts.addr + "/"
	cred := alice + ":" + alicePW
	if out, err := runCurl(t, url, "-u", cred); err == nil {
		t.Fatalf("plaintext login over an insecure connection worked: %q", out)
	}
	if got := mustCurl(t, "--ssl-reqd", "-k", url, "-u", cred); got != fmt.Sprintf("1 %d\r\n", len(wire(testMsgs[0]))) {
		t.Errorf("curl --ssl-reqd = %q", got)
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

type poplibResult struct {
	Welcome       string   `json:"welcome"`
	Capa          []string `json:"capa"`
	STLS          string   `json:"stls"`
	CapaAfterSTLS []string `json:"capa_after_stls"`
	User, Pass    string
	Stat          []int    `json:"stat"`
	List          []string `json:"list"`
	UIDL          []string `json:"uidl"`
	UIDL1         string   `json:"uidl1"`
	Top           []string `json:"top"`
	Retr          []string `json:"retr"`
	RetrOctets    int      `json:"retr_octets"`
	Dele          string   `json:"dele"`
	RetrDeleted   string   `json:"retr_deleted"`
	Noop          string   `json:"noop"`
	Quit          string   `json:"quit"`
}

func runPoplib(t *testing.T, addr, mode string) poplibResult {
	t.Helper()
	py := testutil.NeedCmd(t, "/usr/bin/python3")
	host, p, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/poplib_client.py", host, p, mode, alice, alicePW)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("poplib %s: %v\n%s%s", mode, err, out, stderr)
	}
	var r poplibResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("poplib output %q: %v", out, err)
	}
	return r
}

func TestPoplib(t *testing.T) {
	for _, mode := range []string{"plain", "stls", "ssl"} {
		t.Run(mode, func(t *testing.T) {
			testutil.NeedCmd(t, "/usr/bin/python3")
			secure := func(net.Addr) bool { return mode == "plain" }
			ts := startServer(t, true, func(c *Config) { c.IsSecure = secure })
			ids := ts.deliver(t, alice, testMsgs...)
			addr := ts.addr
			if mode == "ssl" {
				addr = ts.tlsAddr
			}
			r := runPoplib(t, addr, mode)
			total := 0
			var wantList []string
			for i, m := range testMsgs {
				total += len(wire(m))
				wantList = append(wantList, fmt.Sprintf("%d %d", i+1, len(wire(m))))
			}
			check := func(what string, got, want any) {
				t.Helper()
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			check("stat", r.Stat, []int{3, total})
			check("list", r.List, wantList)
			check("uidl", r.UIDL, []string{"1 " + ids[0], "2 " + ids[1], "3 " + ids[2]})
			check("uidl 1", r.UIDL1, "+OK 1 "+ids[0])
			check("top", r.Top, []string{"Subject: one", "From: +447400123456@sms.example.com", "", "hello"})
			check("retr", r.Retr, strings.Split(strings.TrimSuffix(strings.ReplaceAll(wire(testMsgs[0]), "\r\n", "\n"), "\n"), "\n"))
			check("retr octets", r.RetrOctets, len(wire(testMsgs[0])))
			check("dele", r.Dele, "+OK message 1 deleted")
			check("retr deleted", r.RetrDeleted, "-ERR message 1 already deleted")
			check("quit", r.Quit, "+OK bye (1 messages deleted)")
			for _, c := range []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION"} {
				if !slices.Contains(r.Capa, c) {
					t.Errorf("CAPA %v lacks %s", r.Capa, c)
				}
			}
			switch mode {
			case "stls":
				if !slices.Contains(r.Capa, "STLS") || slices.Contains(r.Capa, "USER") {
					t.Errorf("CAPA before STLS on an insecure connection: %v", r.Capa)
				}
				if !slices.Contains(r.CapaAfterSTLS, "USER") || slices.Contains(r.CapaAfterSTLS, "STLS") {
					t.Errorf("CAPA after STLS: %v", r.CapaAfterSTLS)
				}
			case "ssl":
				if slices.Contains(r.Capa, "STLS") || !slices.Contains(r.Capa, "USER") {
					t.Errorf("CAPA over implicit TLS: %v", r.Capa)
				}
			}
			if !strings.Contains(ts.logs.String(), "method=USER") {
				t.Errorf("poplib did not log in with USER/PASS")
			}
			waitUnlocked(t, ts)
			mb, _ := ts.root.Mailbox(alice)
			list, err := mb.List()
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 2 || list[0].ID != ids[1] {
				t.Errorf("after poplib dele+quit: %v, want messages 2 and 3", list)
			}
		})
	}
}
