package policy

import (
	"strings"

	"github.com/emersion/go-msgauth/authres"
)

// arResult is one method result of an Authentication-Results field.
type arResult struct {
	method   string            // "dkim", "spf", "dmarc", ... (lower case)
	value    string            // "pass", "fail", ... (lower case)
	props    map[string]string // "header.d" -> "example.com"; keys lower case, values unquoted
	comments []string          // the (...) comments of this result, e.g. OpenDMARC's "p=reject dis=none"
}

// arField is a parsed Authentication-Results field.
type arField struct {
	id      string // authserv-id as written, possibly "ID/QUEUEID"
	results []arResult
}

// parseAuthResults parses an Authentication-Results value (RFC 8601).
// go-msgauth's parser splits on every ';', also inside comments, and
// rejects comments after the authserv-id ("mx.example.com (postfix);"), so
// comments are taken out here first and each result is handed to it on its
// own. A result that cannot be parsed is skipped: the others still count,
// and a header that yields nothing is as good as absent.
func parseAuthResults(value string) arField {
	segs := splitAR(unfold(value))
	if len(segs) == 0 {
		return arField{}
	}
	idPart := strings.Fields(segs[0].text)
	if len(idPart) == 0 {
		return arField{}
	}
	f := arField{id: strings.Trim(idPart[0], `"`)}
	if f.id == "" {
		return arField{}
	}
	if len(idPart) > 1 && idPart[1] != "1" {
		// RFC 8601 §2.2: only version 1 is defined; results of another
		// version cannot be assumed to mean the same.
		return f
	}
	for _, s := range segs[1:] {
		text := strings.TrimSpace(s.text)
		if text == "" {
			continue
		}
		_, rs, err := authres.Parse("x; " + text)
		if err != nil || len(rs) != 1 {
			continue
		}
		r := arResult{props: map[string]string{}, comments: s.comments}
		switch v := rs[0].(type) {
		case *authres.DKIMResult:
			r.method, r.value = "dkim", string(v.Value)
		case *authres.SPFResult:
			r.method, r.value = "spf", string(v.Value)
		case *authres.DMARCResult:
			r.method, r.value = "dmarc", string(v.Value)
		case *authres.GenericResult:
			r.method, r.value = strings.ToLower(v.Method), string(v.Value)
		default:
			// auth, iprev, arc, ...: not used by the policy.
			continue
		}
		// The typed results drop properties we want (header.b,
		// policy.published-domain-policy): read them all ourselves.
		for _, tok := range strings.Fields(text)[1:] {
			k, v, ok := strings.Cut(tok, "=")
			if !ok {
				continue
			}
			r.props[strings.ToLower(k)] = unquote(v)
		}
		r.value = strings.ToLower(r.value)
		f.results = append(f.results, r)
	}
	return f
}

type arSegment struct {
	text     string // with comments replaced by a space
	comments []string
}

// splitAR splits a value at the ';' that separate results, outside quoted
// strings and (nested) comments, and pulls the comments out. Inside quoted
// strings ';' becomes ',' so the library cannot split there either (only
// free-text "reason" values contain them).
func splitAR(v string) []arSegment {
	var (
		segs    []arSegment
		cur     strings.Builder
		comment strings.Builder
		cmts    []string
		depth   int
		quoted  bool
	)
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case depth > 0:
			switch c {
			case '\\':
				if i+1 < len(v) {
					i++
					comment.WriteByte(v[i])
				}
			case '(':
				depth++
				comment.WriteByte(c)
			case ')':
				depth--
				if depth == 0 {
					cmts = append(cmts, strings.TrimSpace(comment.String()))
					comment.Reset()
					cur.WriteByte(' ')
				} else {
					comment.WriteByte(c)
				}
			default:
				comment.WriteByte(c)
			}
		case quoted:
			switch c {
			case '\\':
				if i+1 < len(v) {
					i++
					if v[i] == ';' {
						cur.WriteByte(',')
					} else if v[i] != '"' {
						cur.WriteByte(v[i])
					}
				}
			case '"':
				quoted = false
				cur.WriteByte(c)
			case ';':
				cur.WriteByte(',')
			default:
				cur.WriteByte(c)
			}
		default:
			switch c {
			case '(':
				depth = 1
			case '"':
				quoted = true
				cur.WriteByte(c)
			case ';':
				segs = append(segs, arSegment{text: cur.String(), comments: cmts})
				cur.Reset()
				cmts = nil
			default:
				cur.WriteByte(c)
			}
		}
	}
	if depth > 0 && comment.Len() > 0 {
		cmts = append(cmts, strings.TrimSpace(comment.String()))
	}
	segs = append(segs, arSegment{text: cur.String(), comments: cmts})
	return segs
}

func unquote(v string) string {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	return v
}

// arBinding says whether an Authentication-Results field written under a
// trusted authserv-id is bound to this transaction.
type arBinding int

const (
	arUntrusted arBinding = iota // not one of ours: ignored silently (other hops write them)
	arForged                     // one of our ids, not bound: ignored and logged
	arBelieved
)

// bind decides whether to believe a field (DESIGN §4): only with an
// authserv-id "ID/QUEUEID" naming this transaction's queue ID, or a bare
// trusted ID when the admin declared that upstream strips forged ones. A
// trusted id alone proves nothing, since the MTA shows the milter the
// client's own headers next to those earlier milters added.
func bind(id string, trusted []string, queueID string, upstreamStrips bool) arBinding {
	base, job, hasJob := strings.Cut(id, "/")
	ok := false
	for _, t := range trusted {
		if strings.EqualFold(base, t) {
			ok = true
			break
		}
	}
	if !ok {
		return arUntrusted
	}
	if hasJob {
		// A job ID for another transaction is a replay or a forgery,
		// whatever upstream does.
		if queueID != "" && job == queueID {
			return arBelieved
		}
		return arForged
	}
	if upstreamStrips {
		return arBelieved
	}
	return arForged
}

// believed holds the results of the believed Authentication-Results fields.
type believed struct {
	dkim, spf, dmarc []arResult
	dkimID           string // authserv-id the results came from, for Verdict.Source
	spfID, dmarcID   string
}

// collectAR parses every Authentication-Results field of h and keeps the
// results of the believed ones. It calls forged for each field with a
// trusted id that is not bound to this transaction.
func collectAR(h []Field, trusted []string, queueID string, upstreamStrips bool, forged func(id string)) believed {
	var b believed
	if len(trusted) == 0 {
		return b
	}
	for _, fl := range h {
		if !strings.EqualFold(strings.TrimSpace(fl.Name), "Authentication-Results") {
			continue
		}
		f := parseAuthResults(fl.Value)
		if f.id == "" {
			continue
		}
		switch bind(f.id, trusted, queueID, upstreamStrips) {
		case arUntrusted:
			continue
		case arForged:
			if forged != nil {
				forged(f.id)
			}
			continue
		}
		id, _, _ := strings.Cut(f.id, "/")
		for _, r := range f.results {
			switch r.method {
			case "dkim":
				b.dkim = append(b.dkim, r)
				b.dkimID = first(b.dkimID, id)
			case "spf":
				b.spf = append(b.spf, r)
				b.spfID = first(b.spfID, id)
			case "dmarc":
				b.dmarc = append(b.dmarc, r)
				b.dmarcID = first(b.dmarcID, id)
			}
		}
	}
	return b
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
