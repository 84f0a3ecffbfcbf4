package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/pluginhost"
	"github.com/smsmilter/smsmilter/internal/testutil"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// fakeAPI is an HTTP SMS API: it records requests and answers by number.
type fakeAPI struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.body = append(f.body, string(b))
	f.mu.Unlock()
	to := r.URL.Query().Get("to")
	if strings.Contains(string(b), `"to"`) {
		var m map[string]any
		json.Unmarshal(b, &m)
		to, _ = m["to"].(string)
	}
	switch to {
	case "+447400000400":
		http.Error(w, "Invalid destination number", http.StatusBadRequest)
	case "+447400000429":
		http.Error(w, "slow down", http.StatusTooManyRequests)
	case "+447400000503":
		http.Error(w, "SMSC down, try later", http.StatusServiceUnavailable)
	default:
		if r.Method == http.MethodPost {
			fmt.Fprintln(w, `{"refs":["p-abc","p-def"]}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintln(w, "0: Accepted for delivery")
	}
}

func (f *fakeAPI) last(t *testing.T) (*http.Request, string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("the API got no request")
	}
	return f.reqs[len(f.reqs)-1], f.body[len(f.body)-1]
}

func start(t *testing.T, bin string, settings map[string]any) *pluginhost.Plugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := pluginhost.Start(ctx, pluginhost.Options{
		Name: "mysms", Plugin: bin, Settings: settings,
		Env: sdk.Env{Name: "mysms", StateDir: t.TempDir()},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestHTTPSMS(t *testing.T) {
	bin := testutil.Build(t, "github.com/smsmilter/smsmilter/examples/httpsms") // as its author ships it
	api := &fakeAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("bad settings", func(t *testing.T) {
		for _, tc := range []struct {
			settings map[string]any
			want     string
		}{
			{map[string]any{}, "setting url"},
			{map[string]any{"url": srv.URL, "format": "xml"}, "setting format"},
			{map[string]any{"url": srv.URL, "passwd": "x"}, `unknown setting "passwd"`},
		} {
			_, err := pluginhost.Start(ctx, pluginhost.Options{Name: "mysms", Plugin: bin, Settings: tc.settings})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !sdk.IsPermanent(err) {
				t.Errorf("%v: error %v, want a permanent one with %q", tc.settings, err, tc.want)
			}
		}
	})

	t.Run("kannel", func(t *testing.T) {
		listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
		p := start(t, bin, map[string]any{
			"url": srv.URL + "/cgi-bin/sendsms", "username": "smsmilter", "password": "s3cret", "listen": listen,
		})
		parts, err := p.Send(ctx, sdk.Message{ID: "job7", To: "+447400123456", From: "ACME", Text: "Disk full & hot", Encoding: "gsm7", Parts: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) != 2 || parts[0].Ref != "job7-0" || parts[1].Ref != "job7-1" {
			t.Errorf("parts %+v", parts)
		}
		r, _ := api.last(t)
		q := r.URL.Query()
		want := map[string]string{
			"username": "smsmilter", "password": "s3cret", "to": "+447400123456", "from": "ACME",
			"text": "Disk full & hot", "coding": "0", "charset": "UTF-8", "dlr-mask": "3",
			"dlr-url": "http://" + listen + "/dlr?id=job7&parts=2&type=%d",
		}
		if r.Method != http.MethodGet || r.URL.Path != "/cgi-bin/sendsms" {
			t.Errorf("%s %s", r.Method, r.URL.Path)
		}
		for k, v := range want {
			if q.Get(k) != v {
				t.Errorf("%s = %q, want %q", k, q.Get(k), v)
			}
		}

		if _, err := p.Send(ctx, sdk.Message{ID: "j8", To: "+819012345678", From: "ACME", Text: "日本語", Encoding: "ucs2", Parts: 1}); err != nil {
			t.Fatal(err)
		}
		if r, _ := api.last(t); r.URL.Query().Get("coding") != "2" || r.URL.Query().Get("text") != "日本語" {
			t.Errorf("ucs2 query %s", r.URL.RawQuery)
		}

		for _, tc := range []struct {
			to        string
			permanent bool
			want      string
		}{
			{"+447400000400", true, "400 Bad Request: Invalid destination number"},
			{"+447400000429", false, "429 Too Many Requests"},
			{"+447400000503", false, "503 Service Unavailable: SMSC down"},
		} {
			_, err := p.Send(ctx, sdk.Message{ID: "x", To: tc.to, From: "ACME", Text: "x", Encoding: "gsm7", Parts: 1})
			if err == nil || sdk.IsPermanent(err) != tc.permanent || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: error %v (permanent %v), want %q (permanent %v)", tc.to, err, sdk.IsPermanent(err), tc.want, tc.permanent)
			}
		}

		// Kannel calls back: a delivery report for job7, then an incoming SMS.
		dlr := strings.Replace(want["dlr-url"], "%d", "1", 1)
		for _, u := range []string{dlr, "http://" + listen + "/incoming?" + url.Values{"from": {"447400123456"}, "to": {"ACME"}, "text": {"on it"}}.Encode()} {
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %s", u, resp.Status)
			}
		}
		var got []string
		for len(got) < 3 {
			select {
			case ev := <-p.Events():
				if ev.Report != nil {
					got = append(got, ev.Report.Ref+" "+ev.Report.State)
				} else {
					got = append(got, ev.Incoming.From+" "+ev.Incoming.Text)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("events so far: %q", got)
			}
		}
		if want := "job7-0 delivered|job7-1 delivered|+447400123456 on it"; strings.Join(got, "|") != want {
			t.Errorf("events %q, want %q", strings.Join(got, "|"), want)
		}
	})

	t.Run("json", func(t *testing.T) {
		p := start(t, bin, map[string]any{"url": srv.URL + "/hook", "format": "json", "username": "u", "password": "p"})
		parts, err := p.Send(ctx, sdk.Message{ID: "j1", To: "+447400123456", From: "ACME", Text: `say "hi"`, Encoding: "gsm7", Parts: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) != 2 || parts[0].Ref != "p-abc" || parts[1].Ref != "p-def" {
			t.Errorf("parts %+v, want the API's refs", parts)
		}
		r, body := api.last(t)
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatal(err)
		}
		if user, pass, _ := r.BasicAuth(); r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || user != "u" || pass != "p" {
			t.Errorf("%s %s %s %s", r.Method, r.Header.Get("Content-Type"), user, pass)
		}
		if m["to"] != "+447400123456" || m["from"] != "ACME" || m["text"] != `say "hi"` || m["id"] != "j1" {
			t.Errorf("body %s", body)
		}
		if _, err := p.Send(ctx, sdk.Message{ID: "j2", To: "+447400000400", Text: "x", Encoding: "gsm7", Parts: 1}); !sdk.IsPermanent(err) {
			t.Errorf("4xx: %v, want a permanent error", err)
		}
	})

	t.Run("API unreachable", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		p := start(t, bin, map[string]any{"url": dead.URL + "/cgi-bin/sendsms", "password": "s3cret"})
		_, err := p.Send(ctx, sdk.Message{ID: "j", To: "+447400123456", Text: "x", Encoding: "gsm7", Parts: 1})
		if err == nil || sdk.IsPermanent(err) {
			t.Errorf("error %v, want a temporary one", err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the password leaks into the error: %v", err)
		}
	})
}
