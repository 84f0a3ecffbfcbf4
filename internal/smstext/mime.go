package smstext

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/emersion/go-message/textproto"
	"github.com/smsmilter/smsmilter/internal/smtpreply"
)

// MaxDepth is how deeply MIME entities may nest (multipart and
// message/rfc822 containers around the innermost part). Deeper structures
// are refused rather than walked: nothing legitimate needs them and each
// level costs a reader and a buffer.
const MaxDepth = 20

// maxPartBytes bounds what is read of one text part. More than an SMS can
// ever hold; the rest of a larger part is ignored.
const maxPartBytes = 2 << 20

// kind of a text candidate, in order of preference.
type kind int

const (
	kindNone kind = iota
	kindPlain
	kindHTML
)

// candidate is a decoded text part.
type candidate struct {
	kind kind
	text string // sanitized, not yet cleaned
}

// walker finds the text of a message: the first inline text/plain part,
// or text/html converted, choosing text/plain inside multipart/alternative.
type walker struct {
	why string // why a part had no readable text, if one had none
}

// errTooDeep is the reply for MIME nested deeper than MaxDepth.
func errTooDeep() error {
	return smtpreply.New(550, "5.6.0", "MIME structure nested deeper than %d levels", MaxDepth)
}

// entity walks one MIME entity. header and body are the raw entity (body
// still transfer-encoded). defaultType is text/plain, or message/rfc822
// inside multipart/digest (RFC 2046 5.1.5). With skip set, only the
// structure is walked (to enforce MaxDepth); no text is decoded.
func (w *walker) entity(h textproto.Header, body io.Reader, depth int, defaultType string, skip bool) (candidate, error) {
	if depth > MaxDepth {
		return candidate{}, errTooDeep()
	}
	mt, params := mediaType(h.Get("Content-Type"), defaultType)
	if disposition(h.Get("Content-Disposition")) == "attachment" {
		return candidate{}, nil
	}
	switch {
	case mt == "multipart/encrypted" || mt == "application/pkcs7-mime" || mt == "application/x-pkcs7-mime":
		w.why = "the message is encrypted"
		return candidate{}, nil
	case strings.HasPrefix(mt, "multipart/"):
		return w.multipart(mt, params["boundary"], body, depth, skip)
	case mt == "message/rfc822" || mt == "message/global":
		// Inline forwarded message: its body, not its header, is text.
		if cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); cte == "base64" || cte == "quoted-printable" {
			// Not allowed by RFC 2046 5.2.1, but seen in the wild.
			raw, _ := io.ReadAll(io.LimitReader(body, maxPartBytes))
			body = bytes.NewReader(decodeTransfer(cte, raw))
		}
		inner := bufio.NewReader(body)
		ih, err := textproto.ReadHeader(inner)
		if err != nil && !errors.Is(err, io.EOF) {
			return candidate{}, nil // a broken inner header: nothing to read there
		}
		return w.entity(ih, inner, depth+1, "text/plain", skip)
	case mt == "text/plain" || mt == "text/html":
		if skip {
			return candidate{}, nil
		}
		return w.leaf(h, mt, params, body)
	}
	return candidate{}, nil // images, applications, calendars...: not SMS text
}

// multipart walks the parts of a multipart entity. In multipart/alternative
// the first text/plain with readable text wins over HTML; in every other
// kind (mixed, related, signed, ...) the first readable text part wins.
// Later parts are still walked for their structure.
func (w *walker) multipart(mt, boundary string, body io.Reader, depth int, skip bool) (candidate, error) {
	if boundary == "" {
		return candidate{}, nil
	}
	childType := "text/plain"
	if mt == "multipart/digest" {
		childType = "message/rfc822"
	}
	mr := textproto.NewMultipartReader(body, boundary)
	var best candidate
	for {
		p, err := mr.NextPart()
		if err != nil {
			// io.EOF, or a malformed or truncated structure: keep what
			// was found so far.
			return best, nil
		}
		done := best.kind == kindPlain || best.kind == kindHTML && mt != "multipart/alternative"
		c, err := w.entity(p.Header, p, depth+1, childType, skip || done)
		if err != nil {
			return candidate{}, err
		}
		if c.kind != kindNone && (best.kind == kindNone || c.kind < best.kind) {
			best = c
		}
	}
}

// leaf decodes a text part, or rejects it as garbage.
func (w *walker) leaf(h textproto.Header, mt string, params map[string]string, body io.Reader) (candidate, error) {
	raw, err := io.ReadAll(io.LimitReader(body, maxPartBytes))
	if err != nil && len(raw) == 0 {
		return candidate{}, nil // unreadable (truncated multipart): keep looking
	}
	raw = decodeTransfer(h.Get("Content-Transfer-Encoding"), raw)
	var text string
	if mt == "text/html" || mt == "text/plain" && looksLikeHTML(raw) {
		// Some senders label HTML as text/plain; its markup must not
		// reach the SMS either way.
		s := sanitize(decodeHTML(params["charset"], raw))
		if s.garbage() {
			w.why = "the text is undecodable binary data"
			return candidate{}, nil
		}
		text = sanitize(htmlToText(s.text)).text
		mt = "text/html"
	} else {
		s := sanitize(decodeCharset(params["charset"], raw))
		if s.garbage() {
			w.why = "the text is undecodable binary data"
			return candidate{}, nil
		}
		text = s.text
		if strings.EqualFold(params["format"], "flowed") {
			text = unflow(text, strings.EqualFold(params["delsp"], "yes"))
		}
	}
	if !readable(text) {
		if strings.TrimSpace(text) != "" && w.why == "" {
			w.why = "the text has no letters, digits or symbols"
		}
		return candidate{}, nil
	}
	k := kindPlain
	if mt == "text/html" {
		k = kindHTML
	}
	return candidate{kind: k, text: text}, nil
}

// mediaType parses a Content-Type leniently: an unparsable parameter list
// keeps the type, an unparsable type is the default (RFC 2045 5.2).
func mediaType(v, def string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return def, map[string]string{}
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil && mt == "" {
		t, _, _ := strings.Cut(v, ";")
		mt = strings.ToLower(strings.TrimSpace(t))
		params = map[string]string{}
		// Keep the parameters that matter even from a broken list.
		for _, f := range strings.Split(v, ";")[1:] {
			k, val, ok := strings.Cut(f, "=")
			if ok {
				params[strings.ToLower(strings.TrimSpace(k))] = strings.Trim(strings.TrimSpace(val), `"`)
			}
		}
	}
	if params == nil {
		params = map[string]string{}
	}
	if !strings.Contains(mt, "/") {
		return def, params
	}
	return mt, params
}

// disposition returns the Content-Disposition type, lower case, even from
// a field whose parameters do not parse.
func disposition(v string) string {
	d, _, _ := strings.Cut(v, ";")
	return strings.ToLower(strings.TrimSpace(d))
}

// looksLikeHTML reports whether a text/plain body is really an HTML
// document.
func looksLikeHTML(b []byte) bool {
	s := strings.ToLower(strings.TrimSpace(string(b[:min(len(b), 512)])))
	for _, p := range []string{"<!doctype html", "<html", "<head", "<body", "<meta ", "<div", "<table", "<p>", "<p ", "<span"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// readHeader reads the top-level header; the milter passes the header as
// the MTA received it, so an error here is a message that is not mail.
func readHeader(br *bufio.Reader) (textproto.Header, error) {
	h, err := textproto.ReadHeader(br)
	if err != nil && !errors.Is(err, io.EOF) { // EOF: a header and no body
		return h, smtpreply.Wrap(fmt.Errorf("smstext: reading header: %w", err), 550, "5.6.0", "malformed message header")
	}
	return h, nil
}
