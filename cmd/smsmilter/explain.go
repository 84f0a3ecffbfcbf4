package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/phone"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/milter"
	"github.com/smsmilter/smsmilter/policy"
)

func explainCommands() []command {
	return []command{{name: "explain", args: "FILE.eml --client-ip IP [--helo NAME] [--mail-from ADDR] [--auth LOGIN] [--to NUMBER] [--queue-id ID]", run: cmdExplain,
		summary: "show the verdicts and decision for a saved message; sends nothing",
		help: `Runs the same checks the milter runs at end of message on a saved message
(an .eml file as received, headers included) and prints each verdict (DKIM,
SPF, DMARC), the rule that matched, the decision and a preview of the SMS.
Nothing is sent or queued; DNS is queried through dns.resolver.

  --client-ip IP    the address of the server that sent the mail (required)
  --helo NAME       its HELO name
  --mail-from ADDR  the envelope sender (default: the From: address)
  --auth LOGIN      the SMTP AUTH login, if the session was authenticated
  --to NUMBER       a recipient number, to check it and count the quota
  --queue-id ID     the MTA queue ID, to believe Authentication-Results
                    written as ID/QUEUEID by a trusted milter

Exit 0: it would be sent; 1: it would be refused (or cannot be decided now).`}}
}

func cmdExplain(a *app, args []string) int {
	const name = "explain"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	clientIP := fs.String("client-ip", "", "client IP")
	helo := fs.String("helo", "", "HELO name")
	mailFrom := fs.String("mail-from", "", "envelope sender")
	auth := fs.String("auth", "", "SMTP AUTH login")
	to := fs.String("to", "", "recipient number")
	queueID := fs.String("queue-id", "", "MTA queue ID")
	pos, ok := a.parseFlags(fs, name, args)
	if !ok {
		return exitUsage
	}
	if len(pos) != 1 {
		return a.usageError(name, "give exactly one FILE.eml")
	}
	if *clientIP == "" {
		return a.usageError(name, "--client-ip IP is required: the address of the server that sent the mail")
	}
	ip, err := netip.ParseAddr(*clientIP)
	if err != nil {
		return a.usageError(name, "--client-ip %q is not an IP address", *clientIP)
	}
	raw, err := os.ReadFile(pos[0])
	if err != nil {
		fmt.Fprintf(a.stderr, "smsmilter: %v\n", err)
		return exitUsage
	}
	header, body := splitMessage(raw)
	if len(header) == 0 {
		fmt.Fprintf(a.stderr, "smsmilter: %s has no header fields; give the message as received, headers included\n", pos[0])
		return exitUsage
	}
	return a.withStore(func(cfg *config.Config, st store.Store) int {
		in := &milter.Input{ClientIP: ip.Unmap(), Helo: *helo, MailFrom: *mailFrom, AuthLogin: *auth, QueueID: *queueID, Header: header, Body: body}
		if in.MailFrom == "" {
			in.MailFrom = fromAddress(header)
		}
		if *to != "" {
			n, err := phone.ParseRecipient(strings.SplitN(*to, "@", 2)[0], cfg.Numbers.DefaultRegion, cfg.Numbers.AllowedRegions)
			if err != nil {
				fmt.Fprintf(a.stdout, "Recipient: REFUSED at RCPT: %v\n", err)
				return exitFailed
			}
			in.Rcpts = []phone.Number{n}
			fmt.Fprintf(a.stdout, "Recipient: %s (%s)\n", n.E164, n.Region)
		} else {
			in.Rcpts = []phone.Number{{E164: "+0"}} // one SMS, for the quota count
		}
		h, err := milter.New(milter.Options{Config: cfg, Store: st})
		if err != nil {
			fmt.Fprintf(a.stderr, "smsmilter: %v\n", err)
			return exitUsage
		}
		p := h.Plan(a.ctx, in, true)
		fmt.Fprintf(a.stdout, "Message: %s (client %s, HELO %q, MAIL FROM <%s>)\n", pos[0], ip, *helo, in.MailFrom)
		var b bytes.Buffer
		milter.WriteExplanation(&b, p)
		a.stdout.Write(b.Bytes())
		if p.Err != nil {
			return exitFailed
		}
		return exitOK
	})
}

// splitMessage reads a saved message into header fields as an MTA gives
// them to a milter (value with its leading space and folds) and a CRLF body.
func splitMessage(raw []byte) ([]policy.Field, []byte) {
	raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	r := bufio.NewReader(bytes.NewReader(raw))
	var fields []policy.Field
	for {
		line, err := r.ReadString('\n')
		if line == "\n" || (line == "" && err != nil) {
			break
		}
		line = strings.TrimSuffix(line, "\n")
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1].Value += "\n" + line
		} else if name, value, ok := strings.Cut(line, ":"); ok && !strings.ContainsAny(name, " \t") {
			fields = append(fields, policy.Field{Name: name, Value: value})
		} else {
			// Not a header line: the message has no blank line before
			// its body; treat the rest as body.
			rest, _ := io.ReadAll(r)
			body := append([]byte(line+"\n"), rest...)
			return fields, bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n"))
		}
		if err != nil {
			break
		}
	}
	rest, _ := io.ReadAll(r)
	return fields, bytes.ReplaceAll(rest, []byte("\n"), []byte("\r\n"))
}

func fromAddress(h []policy.Field) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, "From") {
			v := strings.TrimSpace(f.Value)
			if i := strings.LastIndexByte(v, '<'); i >= 0 {
				v = strings.TrimSuffix(v[i+1:], ">")
			}
			return strings.TrimSpace(v)
		}
	}
	return ""
}
