package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// transport sends through an HTTP SMS API. Its settings:
//
//	url:        the API: Kannel's http://HOST:13013/cgi-bin/sendsms, or a webhook
//	format:     kannel (default) or json
//	username:   Kannel username, or HTTP basic auth user for json
//	password:
//	listen:     optional HOST:PORT for delivery reports and incoming SMS
//	public_url: how the API reaches listen; default http://LISTEN
//	timeout:    per request, default 10s
type transport struct {
	log    *slog.Logger
	client *http.Client

	url, format, username, password string
	publicURL                       string
	server                          *http.Server
	events                          chan sdk.Event
	closeOnce                       sync.Once
}

func newTransport(log *slog.Logger) *transport {
	return &transport{log: log, events: make(chan sdk.Event, 100)}
}

func (t *transport) Configure(_ context.Context, env sdk.Env, s map[string]any) error {
	known := map[string]bool{"url": true, "format": true, "username": true, "password": true, "listen": true, "public_url": true, "timeout": true}
	v := map[string]string{}
	for k, x := range s {
		if !known[k] {
			return sdk.Permanent(fmt.Errorf("httpsms: unknown setting %q (known: url, format, username, password, listen, public_url, timeout)", k))
		}
		str, ok := x.(string)
		if !ok {
			return sdk.Permanent(fmt.Errorf("httpsms: setting %s must be a string", k))
		}
		v[k] = str
	}
	t.url, t.format, t.username, t.password, t.publicURL = v["url"], v["format"], v["username"], v["password"], v["public_url"]
	listen, timeout := v["listen"], v["timeout"]
	if u, err := url.Parse(t.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return sdk.Permanent(fmt.Errorf("httpsms: setting url: want an http(s) URL, got %q", t.url))
	}
	switch t.format {
	case "":
		t.format = "kannel"
	case "kannel", "json":
	default:
		return sdk.Permanent(fmt.Errorf("httpsms: setting format: want kannel or json, got %q", t.format))
	}
	d := 10 * time.Second
	if timeout != "" {
		var err error
		if d, err = time.ParseDuration(timeout); err != nil || d <= 0 {
			return sdk.Permanent(fmt.Errorf("httpsms: setting timeout: %q is not a positive duration", timeout))
		}
	}
	t.client = &http.Client{Timeout: d}

	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("httpsms: listen: %w", err)
		}
		if t.publicURL == "" {
			t.publicURL = "http://" + ln.Addr().String()
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/dlr", t.handleDLR)
		mux.HandleFunc("/incoming", t.handleIncoming)
		t.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go t.server.Serve(ln)
	}
	t.log.Info("httpsms configured", "transport", env.Name, "url", t.url, "format", t.format, "listen", listen)
	return nil
}

func (t *transport) Send(ctx context.Context, m sdk.Message) ([]sdk.PartResult, error) {
	parts := max(m.Parts, 1)
	refs := make([]string, parts)
	for i := range refs {
		refs[i] = fmt.Sprintf("%s-%d", m.ID, i)
	}
	var req *http.Request
	var err error
	switch t.format {
	case "kannel":
		req, err = t.kannelRequest(ctx, m, parts)
	default:
		req, err = t.jsonRequest(ctx, m, parts)
	}
	if err != nil {
		return nil, err
	}
	resp, err := t.client.Do(req)
	if err != nil {
		// Connection refused, timeout: the API may be back soon.
		return nil, fmt.Errorf("httpsms: %w", redact(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	text := strings.TrimSpace(string(body))
	switch {
	case resp.StatusCode/100 == 2:
	case resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		// The API refused this SMS (bad number, bad sender, no credit):
		// sending it again will not change its mind.
		return nil, sdk.Permanent(fmt.Errorf("httpsms: %s: %s", resp.Status, text))
	default:
		return nil, fmt.Errorf("httpsms: %s: %s", resp.Status, text)
	}
	// A JSON API may name the parts itself: {"refs": ["abc", "def"]}.
	var answer struct {
		Refs []string `json:"refs"`
	}
	if t.format == "json" && json.Unmarshal(body, &answer) == nil && len(answer.Refs) == parts {
		refs = answer.Refs
	}
	results := make([]sdk.PartResult, parts)
	for i := range results {
		results[i] = sdk.PartResult{Index: i, Ref: refs[i]}
	}
	return results, nil
}

// kannelRequest builds a GET for Kannel's sendsms. Kannel gives no message
// ID back, so the parts are named "<id>-<index>" here and the delivery
// report URL carries the ID.
func (t *transport) kannelRequest(ctx context.Context, m sdk.Message, parts int) (*http.Request, error) {
	q := url.Values{}
	q.Set("username", t.username)
	q.Set("password", t.password)
	q.Set("to", m.To)
	q.Set("from", m.From)
	q.Set("text", m.Text)
	q.Set("charset", "UTF-8")
	coding := "0" // GSM 7-bit
	if m.Encoding == "ucs2" {
		coding = "2"
	}
	q.Set("coding", coding)
	if t.server != nil {
		// 1 delivered + 2 failed; Kannel replaces %d with the report type.
		q.Set("dlr-mask", "3")
		q.Set("dlr-url", fmt.Sprintf("%s/dlr?id=%s&parts=%d&type=%%d", t.publicURL, url.QueryEscape(m.ID), parts))
	}
	u, _ := url.Parse(t.url)
	u.RawQuery = q.Encode()
	return http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
}

// jsonRequest builds a POST for a JSON webhook.
func (t *transport) jsonRequest(ctx context.Context, m sdk.Message, parts int) (*http.Request, error) {
	body, err := json.Marshal(map[string]any{
		"id": m.ID, "to": m.To, "from": m.From, "text": m.Text, "encoding": m.Encoding, "parts": parts,
	})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if t.username != "" {
		req.SetBasicAuth(t.username, t.password)
	}
	return req, nil
}

// redact keeps the query of a Kannel URL, password included, out of
// error messages (they reach logs and non-delivery notices).
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery = ""
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

// handleDLR takes a delivery report: Kannel's ?id=&parts=&type= (type 1
// delivered, 2 and 16 failed, others intermediate), or ?ref=&state= from
// another API.
func (t *transport) handleDLR(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if ref := q.Get("ref"); ref != "" {
		t.deliver(w, r, sdk.Event{Report: &sdk.Report{Ref: ref, State: q.Get("state"), Error: q.Get("error"), At: time.Now()}})
		return
	}
	id := q.Get("id")
	parts, err := strconv.Atoi(q.Get("parts"))
	if id == "" || err != nil || parts < 1 || parts > 255 {
		http.Error(w, "want id, parts and type", http.StatusBadRequest)
		return
	}
	state := ""
	switch q.Get("type") {
	case "1":
		state = "delivered"
	case "2", "16":
		state = "failed"
	default:
		fmt.Fprintln(w, "ok") // buffered, submitted: not reported
		return
	}
	// Kannel reports a long message as a whole: every part gets the state.
	for i := 0; i < parts; i++ {
		ev := sdk.Event{Report: &sdk.Report{Ref: fmt.Sprintf("%s-%d", id, i), State: state, At: time.Now()}}
		if !t.queue(r.Context(), ev) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// handleIncoming takes an incoming SMS: ?from=&to=&text= (Kannel's
// sms-service get-url "http://LISTEN/incoming?from=%p&to=%P&text=%a").
func (t *transport) handleIncoming(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	from := international(r.Form.Get("from"))
	if from == "" {
		http.Error(w, "want from", http.StatusBadRequest)
		return
	}
	t.deliver(w, r, sdk.Event{Incoming: &sdk.Incoming{From: from, To: r.Form.Get("to"), Text: r.Form.Get("text"), At: time.Now()}})
}

func (t *transport) deliver(w http.ResponseWriter, r *http.Request, ev sdk.Event) {
	if !t.queue(r.Context(), ev) {
		// The API retries later; better than losing it.
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (t *transport) queue(ctx context.Context, ev sdk.Event) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	select {
	case t.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// international writes a sender number as E.164: "00..." and bare digits
// are taken as international (this API's numbers always are).
func international(n string) string {
	n = strings.TrimSpace(n)
	switch {
	case n == "":
		return ""
	case strings.HasPrefix(n, "+"):
		return n
	case strings.HasPrefix(n, "00"):
		return "+" + n[2:]
	case strings.Trim(n, "0123456789") == "":
		return "+" + n
	}
	return n // an alphanumeric sender
}

func (t *transport) Events(ctx context.Context, out chan<- sdk.Event) error {
	return sdk.Forward(ctx, t.events, out, nil)
}

func (t *transport) Health(context.Context) error {
	if t.client == nil {
		return errors.New("httpsms: not configured")
	}
	return nil
}

func (t *transport) Close() error {
	var err error
	t.closeOnce.Do(func() {
		if t.server != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err = t.server.Shutdown(ctx)
		}
	})
	return err
}
