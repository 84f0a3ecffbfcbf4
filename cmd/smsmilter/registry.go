package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/dnsresolver"
	"github.com/smsmilter/smsmilter/internal/mailer"
	"github.com/smsmilter/smsmilter/internal/pop3"
	"github.com/smsmilter/smsmilter/internal/registry"
	"github.com/smsmilter/smsmilter/internal/store"
)

func registryCommands() []command {
	return []command{
		{name: "user add", args: "NAME --sender-id ID [--tps N] [--daily N]", run: cmdUserAdd,
			summary: "add a forwarding user: the SMS identity mail is sent as",
			help: `A forwarding user is who the SMS come from: its sender ID is what the
phone shows. Every rule (address, domain, ip) names one.

  --sender-id ID  a number (+447400123456: replies can reach it) or a name of
                  up to 11 letters and digits (ACME: replies cannot reach it)
  --tps N         SMS per second for this user (default 0: only the
                  transport's pace); bursts wait in the queue, they do not fail
  --daily N       SMS parts per UTC day (default 0: unlimited); over it, mail
                  is refused with 550 5.7.1

Example: smsmilter user add ops --sender-id ACME --tps 5 --daily 1000`},
		{name: "domain add", args: "DOMAIN --user NAME [--security TYPE] [--ips CIDR,...] [--dkim L] [--spf L] [--dmarc L]", run: cmdDomainAdd,
			summary: "authorize a whole mail domain (active once verified)",
			help: ruleFlagsHelp + `
A domain rule covers the exact domain of the From: address; sub-domains are
not covered (register each one). It stays inactive until you publish the TXT
record this command prints and run ` + "`smsmilter domain verify DOMAIN`" + `.`},
		{name: "domain verify", args: "DOMAIN", run: cmdDomainVerify,
			summary: "check the domain's TXT record and activate its rule",
			help: `Looks up the TXT records of DOMAIN (through dns.resolver, or the system
resolver) for smsmilter-verification=<token>. Exit 0: verified and active.
Exit 1: not verified; the output says what was found instead.`},
		{name: "address add", args: "EMAIL --user NAME [--security TYPE] [--ips CIDR,...] [--dkim L] [--spf L] [--dmarc L]", run: cmdAddressAdd,
			summary: "authorize one sender address",
			help: ruleFlagsHelp + `
An address rule matches the exact From: address (case-insensitive), and
also the envelope sender. It wins over domain and ip rules.`},
		{name: "address import", args: "FILE.csv [--dry-run] [--notify]", run: cmdAddressImport,
			summary: "add many address rules from a CSV file, all or nothing",
			help: `The file has a header row, then one address per row:

  email,user[,security[,dkim,spf,dmarc]]
  alice@example.com,ops
  bob@example.com,sales,auth,gray,gray,gray

A UTF-8 byte order mark, CRLF line ends and quoted fields are fine.

  --dry-run  print what each row would add, and each row's error; change nothing
  --notify   mail each imported address that it may now send SMS by email
             (through mail.smtp)

A file with any error imports nothing and exits 1: fix every row first.`},
		{name: "ip add", args: "CIDR --user NAME [--dkim L] [--spf L] [--dmarc L]", run: cmdIPAdd,
			summary: "authorize every sender through a sending server's address",
			help: `An ip rule allows any sender address from a client IP inside CIDR (the
server connecting to your MTA). The IP match is its security; its
thresholds default to fail (no further check) and can be raised:

  --dkim L, --spf L, --dmarc L   pass | gray | fail (default fail)`},
		{name: "mailbox passwd", args: "ADDRESS", run: cmdMailboxPasswd,
			summary: "set a POP3 mailbox password (read from the first line of stdin)",
			help: `Sets the password of the POP3 mailbox ADDRESS (the mailbox that holds
replies for that address). The password is the first line of standard
input, without its newline; it is stored hashed (bcrypt).

Example: printf '%s\n' 's3cret' | smsmilter mailbox passwd alice@example.com`},
		{name: "list", args: "", run: cmdList, summary: "show forwarding users and rules"},
	}
}

const ruleFlagsHelp = `  --user NAME       forwarding user the mail is sent as (see ` + "`user add`" + `)
  --security TYPE   how smsmilter trusts that the mail came from there:
                    spf (default): SPF of the envelope sender passes
                    google: the client IP is one of Google's mail servers
                    office365: the client IP is one of Microsoft 365's
                    ip: the client IP is in --ips CIDR,...
                    auth: the SMTP session is authenticated (for an address
                          rule, as that address or its local part)
                    none: only the thresholds apply
  --ips CIDR,...    the servers' addresses, for --security ip
  --dkim L, --spf L, --dmarc L
                    lowest verdict still allowed: pass, gray or fail
                    (default gray). DKIM pass: an aligned valid signature;
                    gray: none; fail: a broken one. SPF pass; gray: none or
                    neutral; fail: fail, softfail, permerror. DMARC pass:
                    pass under p=quarantine/reject; gray: no record or
                    p=none but SPF or DKIM passed; fail: the rest.
`

type ruleFlags struct {
	user, security, ips, dkim, spf, dmarc string
}

func (f *ruleFlags) register(fs *flag.FlagSet, withSecurity bool) {
	fs.StringVar(&f.user, "user", "", "forwarding user")
	if withSecurity {
		fs.StringVar(&f.security, "security", "", "security type")
		fs.StringVar(&f.ips, "ips", "", "CIDR list for --security ip")
	}
	fs.StringVar(&f.dkim, "dkim", "", "DKIM threshold")
	fs.StringVar(&f.spf, "spf", "", "SPF threshold")
	fs.StringVar(&f.dmarc, "dmarc", "", "DMARC threshold")
}

func (f *ruleFlags) spec(kind, pattern string) registry.RuleSpec {
	s := registry.RuleSpec{Kind: kind, Pattern: pattern, User: f.user, Security: f.security, DKIM: f.dkim, SPF: f.spf, DMARC: f.dmarc}
	for _, ip := range strings.Split(f.ips, ",") {
		if ip = strings.TrimSpace(ip); ip != "" {
			s.IPs = append(s.IPs, ip)
		}
	}
	return s
}

func cmdUserAdd(a *app, args []string) int {
	const name = "user add"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var u store.User
	fs.StringVar(&u.SenderID, "sender-id", "", "sender ID")
	fs.Float64Var(&u.TPS, "tps", 0, "SMS per second")
	fs.IntVar(&u.Daily, "daily", 0, "SMS parts per day")
	pos, ok := a.parseFlags(fs, name, args)
	if !ok {
		return exitUsage
	}
	if len(pos) != 1 {
		return a.usageError(name, "give exactly one user NAME")
	}
	u.Name = pos[0]
	if err := registry.User(u); err != nil {
		return a.usageError(name, "%v", err)
	}
	return a.withStore(func(cfg *config.Config, st store.Store) int {
		u.Created = time.Now()
		if err := st.AddUser(a.ctx, u); err != nil {
			if errors.Is(err, store.ErrDuplicate) {
				fmt.Fprintf(a.stderr, "smsmilter: forwarding user %q already exists\n", u.Name)
				return exitFailed
			}
			return a.storeError(err)
		}
		a.registryEvent(st, fmt.Sprintf("forwarding user %s added (sender ID %s)", u.Name, u.SenderID), map[string]string{"user": u.Name})
		fmt.Fprintf(a.stdout, "Added forwarding user %s (sender ID %s", u.Name, u.SenderID)
		if u.TPS > 0 {
			fmt.Fprintf(a.stdout, ", %g SMS/s", u.TPS)
		}
		if u.Daily > 0 {
			fmt.Fprintf(a.stdout, ", %d SMS/day", u.Daily)
		}
		fmt.Fprintln(a.stdout, ").")
		if !registry.NumericSenderID(u.SenderID) {
			fmt.Fprintln(a.stdout, "Note: replies cannot reach an alphanumeric sender ID; use a number if you want AutoCLIP replies.")
		}
		return exitOK
	})
}

// addRule is the shared part of domain/address/ip add.
func (a *app) addRule(name string, args []string, kind string, withSecurity bool, after func(store.Rule)) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var rf ruleFlags
	rf.register(fs, withSecurity)
	pos, ok := a.parseFlags(fs, name, args)
	if !ok {
		return exitUsage
	}
	if len(pos) != 1 {
		return a.usageError(name, "give exactly one %s", strings.ToUpper(strings.Fields(name)[0]))
	}
	r, err := registry.Rule(rf.spec(kind, pos[0]))
	if err != nil {
		return a.usageError(name, "%v", err)
	}
	return a.withStore(func(cfg *config.Config, st store.Store) int {
		r.Created = time.Now()
		added, err := st.AddRule(a.ctx, r)
		switch {
		case errors.Is(err, store.ErrNotFound):
			fmt.Fprintf(a.stderr, "smsmilter: unknown forwarding user %q; add it first with `smsmilter user add %s --sender-id ID`\n", r.User, r.User)
			return exitFailed
		case errors.Is(err, store.ErrDuplicate):
			// AddRule returns no rule on error: name the one asked for.
			fmt.Fprintf(a.stderr, "smsmilter: %s rule %s already exists (see `smsmilter list`)\n", kind, r.Pattern)
			return exitFailed
		case err != nil:
			return a.storeError(err)
		}
		a.registryEvent(st, fmt.Sprintf("%s rule %s added for user %s", kind, added.Pattern, added.User), map[string]string{"rule": kind + ":" + added.Pattern, "user": added.User})
		after(added)
		return exitOK
	})
}

func describeRule(r store.Rule) string {
	s := fmt.Sprintf("security %s", r.Security)
	if len(r.IPs) > 0 && r.Kind != store.KindIP {
		s += " (" + strings.Join(r.IPs, ", ") + ")"
	}
	return s + fmt.Sprintf(", thresholds dkim %s, spf %s, dmarc %s", r.DKIM, r.SPF, r.DMARC)
}

func cmdDomainAdd(a *app, args []string) int {
	return a.addRule("domain add", args, store.KindDomain, true, func(r store.Rule) {
		fmt.Fprintf(a.stdout, "Added domain rule %s for user %s: %s.\n", r.Pattern, r.User, describeRule(r))
		fmt.Fprintf(a.stdout, "It is not active until verified. Publish this TXT record on %s:\n\n", r.Pattern)
		fmt.Fprintf(a.stdout, "  %s.  IN TXT  \"%s%s\"\n\n", r.Pattern, registry.TXTPrefix, r.Token)
		fmt.Fprintf(a.stdout, "then run: smsmilter domain verify %s\n", r.Pattern)
	})
}

func cmdAddressAdd(a *app, args []string) int {
	return a.addRule("address add", args, store.KindAddress, true, func(r store.Rule) {
		fmt.Fprintf(a.stdout, "Added address rule %s for user %s: %s.\n", r.Pattern, r.User, describeRule(r))
	})
}

func cmdIPAdd(a *app, args []string) int {
	return a.addRule("ip add", args, store.KindIP, false, func(r store.Rule) {
		fmt.Fprintf(a.stdout, "Added ip rule %s for user %s: any sender through this server, thresholds dkim %s, spf %s, dmarc %s.\n",
			r.Pattern, r.User, r.DKIM, r.SPF, r.DMARC)
	})
}

func cmdDomainVerify(a *app, args []string) int {
	const name = "domain verify"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	pos, ok := a.parseFlags(fs, name, args)
	if !ok {
		return exitUsage
	}
	if len(pos) != 1 {
		return a.usageError(name, "give exactly one DOMAIN")
	}
	domain, err := registry.Domain(pos[0])
	if err != nil {
		return a.usageError(name, "%v", err)
	}
	return a.withStore(func(cfg *config.Config, st store.Store) int {
		r, err := st.FindRule(a.ctx, store.KindDomain, domain)
		if errors.Is(err, store.ErrNotFound) {
			fmt.Fprintf(a.stderr, "smsmilter: no domain rule for %s; add one with `smsmilter domain add %s --user NAME`\n", domain, domain)
			return exitFailed
		}
		if err != nil {
			return a.storeError(err)
		}
		want := registry.TXTPrefix + r.Token
		res := dnsresolver.New(cfg.DNS.Resolver, cfg.DNS.Timeout)
		txts, err := res.LookupTXT(a.ctx, domain)
		if err != nil {
			var de *net.DNSError
			if errors.As(err, &de) && de.IsNotFound {
				fmt.Fprintf(a.stdout, "%s is not verified: no TXT records found at %s.\nPublish: %s.  IN TXT  \"%s\"\n", domain, domain, domain, want)
			} else {
				fmt.Fprintf(a.stdout, "%s is not verified: the DNS lookup failed: %v\nTry again later, or check dns.resolver in %s.\n", domain, err, a.configPath)
			}
			return exitFailed
		}
		var others []string
		for _, t := range txts {
			if strings.TrimSpace(t) == want {
				if err := st.SetDomainVerified(a.ctx, domain, time.Now()); err != nil {
					return a.storeError(err)
				}
				a.registryEvent(st, "domain "+domain+" verified", map[string]string{"rule": "domain:" + domain})
				fmt.Fprintf(a.stdout, "%s verified: found %q. The domain rule is active now.\n", domain, want)
				return exitOK
			}
			if strings.HasPrefix(strings.TrimSpace(t), registry.TXTPrefix) {
				others = append(others, t)
			}
		}
		if len(others) > 0 {
			fmt.Fprintf(a.stdout, "%s is not verified: found %s, but this domain's token is %q (wrong token or an old record).\n",
				domain, quoteList(others), want)
		} else {
			fmt.Fprintf(a.stdout, "%s is not verified: %d TXT record(s) found, none is %s...: %s\nPublish: %s.  IN TXT  \"%s\"\n",
				domain, len(txts), registry.TXTPrefix, quoteList(txts), domain, want)
		}
		return exitFailed
	})
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		if len(s) > 80 {
			s = s[:80] + "..."
		}
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func cmdAddressImport(a *app, args []string) int {
	const name = "address import"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	dry := fs.Bool("dry-run", false, "preview only")
	notify := fs.Bool("notify", false, "mail each imported address")
	pos, ok := a.parseFlags(fs, name, args)
	if !ok {
		return exitUsage
	}
	if len(pos) != 1 {
		return a.usageError(name, "give exactly one FILE.csv")
	}
	f, err := os.Open(pos[0])
	if err != nil {
		fmt.Fprintf(a.stderr, "smsmilter: %v\n", err)
		return exitUsage
	}
	defer f.Close()
	rows, err := registry.ReadAddressCSV(f)
	if err != nil {
		fmt.Fprintf(a.stderr, "smsmilter: %s: %v\n", pos[0], err)
		return exitFailed
	}
	return a.withStore(func(cfg *config.Config, st store.Store) int {
		users := map[string]bool{}
		for i := range rows {
			r := &rows[i]
			if r.Err != nil {
				continue
			}
			known, seen := users[r.Rule.User]
			if !seen {
				_, err := st.GetUser(a.ctx, r.Rule.User)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return a.storeError(err)
				}
				known = err == nil
				users[r.Rule.User] = known
			}
			if !known {
				r.Err = fmt.Errorf("unknown forwarding user %q", r.Rule.User)
				continue
			}
			if _, err := st.FindRule(a.ctx, store.KindAddress, r.Rule.Pattern); err == nil {
				r.Err = fmt.Errorf("%s already has an address rule", r.Rule.Pattern)
			} else if !errors.Is(err, store.ErrNotFound) {
				return a.storeError(err)
			}
		}
		nerr := 0
		for _, r := range rows {
			if r.Err != nil {
				nerr++
			}
		}
		if *dry {
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ROW\tEMAIL\tUSER\tSECURITY\tDKIM\tSPF\tDMARC\tRESULT")
			for _, r := range rows {
				if r.Err != nil {
					// The pattern is known for rows that failed a registry
					// check (duplicate, unknown user), not for bad addresses.
					email, user := r.Rule.Pattern, r.Rule.User
					if email == "" {
						user = ""
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t\t\t\t\terror: %v\n", r.Num, email, user, r.Err)
					continue
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\twould add\n", r.Num, r.Rule.Pattern, r.Rule.User, r.Rule.Security, r.Rule.DKIM, r.Rule.SPF, r.Rule.DMARC)
			}
			w.Flush()
			fmt.Fprintf(a.stdout, "\nDry run: %d row(s), %d would be added, %d error(s). Nothing was changed.\n", len(rows), len(rows)-nerr, nerr)
			if nerr > 0 {
				return exitFailed
			}
			return exitOK
		}
		if nerr > 0 {
			for _, r := range rows {
				if r.Err != nil {
					fmt.Fprintf(a.stderr, "row %d: %v\n", r.Num, r.Err)
				}
			}
			fmt.Fprintf(a.stderr, "smsmilter: %s: %d error(s); nothing was imported. Fix them (see --dry-run) and run the import again.\n", pos[0], nerr)
			return exitFailed
		}
		if len(rows) == 0 {
			fmt.Fprintf(a.stdout, "%s has no rows after the header; nothing to import.\n", pos[0])
			return exitOK
		}
		rules := make([]store.Rule, len(rows))
		now := time.Now()
		for i, r := range rows {
			rules[i] = r.Rule
			rules[i].Created = now
		}
		if err := st.AddRules(a.ctx, rules); err != nil {
			if errors.Is(err, store.ErrDuplicate) || errors.Is(err, store.ErrNotFound) {
				fmt.Fprintf(a.stderr, "smsmilter: the registry changed during the import (%v); nothing was imported, run it again\n", err)
				return exitFailed
			}
			return a.storeError(err)
		}
		a.registryEvent(st, fmt.Sprintf("%d address rules imported from %s", len(rules), pos[0]), map[string]string{"file": pos[0]})
		fmt.Fprintf(a.stdout, "Imported %d address rule(s) from %s.\n", len(rules), pos[0])
		if *notify {
			return a.notifyImported(cfg, st, rules)
		}
		return exitOK
	})
}

// notifyImported queues a welcome mail per address and tries to hand it
// to the MTA now; mail the MTA does not take now is sent by the daemon.
func (a *app) notifyImported(cfg *config.Config, st store.Store, rules []store.Rule) int {
	spool := mailer.NewSpool(st, func() string { return cfg.Mail.SMTP }, nil)
	dom := "example.com"
	if len(cfg.SMSDomains) > 0 {
		dom = cfg.SMSDomains[0]
	}
	queued := 0
	for _, r := range rules {
		body := fmt.Sprintf("Hello,\n\nYou may now send SMS by email: write to +<number>@%s, for example\n+447400123456@%s, and the text of your mail is sent as an SMS.\n\nReplies to the SMS come back to you by email.\n", dom, dom)
		m := &mailer.Message{From: cfg.Mail.From, To: r.Pattern, Subject: "You can now send SMS by email", Date: time.Now(), Body: body,
			Extra: map[string]string{"Auto-Submitted": "auto-generated"}}
		data, err := m.Bytes()
		if err != nil {
			fmt.Fprintf(a.stderr, "smsmilter: cannot compose the notice to %s: %v\n", r.Pattern, err)
			continue
		}
		if err := spool.Submit(a.ctx, cfg.Mail.From, []string{r.Pattern}, data); err != nil {
			return a.storeError(err)
		}
		queued++
	}
	spool.Flush(a.ctx)
	fmt.Fprintf(a.stdout, "Queued %d notice mail(s) for %s (mail.smtp); what the MTA does not take now, smsmilter serve retries.\n", queued, cfg.Mail.SMTP)
	if queued < len(rules) {
		return exitFailed
	}
	return exitOK
}

func cmdList(a *app, args []string) int {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	pos, ok := a.parseFlags(fs, "list", args)
	if !ok {
		return exitUsage
	}
	if len(pos) > 0 {
		return a.usageError("list", "list takes no arguments (got %q)", pos[0])
	}
	return a.withStore(func(cfg *config.Config, st store.Store) int {
		users, err := st.ListUsers(a.ctx)
		if err != nil {
			return a.storeError(err)
		}
		rules, err := st.ListRules(a.ctx)
		if err != nil {
			return a.storeError(err)
		}
		w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "USER\tSENDER ID\tTPS\tDAILY")
		for _, u := range users {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", u.Name, u.SenderID, orDash(u.TPS > 0, fmt.Sprintf("%g", u.TPS)), orDash(u.Daily > 0, fmt.Sprint(u.Daily)))
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "KIND\tPATTERN\tUSER\tSECURITY\tDKIM\tSPF\tDMARC\tSTATE")
		for _, r := range rules {
			state := "active"
			if r.Kind == store.KindDomain && !r.Verified {
				state = "not verified"
			}
			sec := r.Security
			if r.Security == "ip" && r.Kind != store.KindIP {
				sec += " " + strings.Join(r.IPs, ",")
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Kind, r.Pattern, r.User, sec, r.DKIM, r.SPF, r.DMARC, state)
		}
		w.Flush()
		return exitOK
	})
}

func orDash(ok bool, s string) string {
	if ok {
		return s
	}
	return "-"
}

func cmdMailboxPasswd(a *app, args []string) int {
	const name = "mailbox passwd"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	pos, ok := a.parseFlags(fs, name, args)
	if !ok {
		return exitUsage
	}
	if len(pos) != 1 {
		return a.usageError(name, "give exactly one mailbox ADDRESS")
	}
	addr, err := registry.Address(pos[0])
	if err != nil {
		return a.usageError(name, "%v", err)
	}
	pw, err := readFirstLine(a.stdin)
	if err != nil {
		fmt.Fprintf(a.stderr, "smsmilter: cannot read the password from stdin: %v\n", err)
		return exitUsage
	}
	if pw == "" {
		return a.usageError(name, "the password (first line of stdin) is empty")
	}
	if strings.ContainsRune(pw, 0) {
		return a.usageError(name, "the password contains a NUL byte")
	}
	hash, err := pop3.HashPassword(pw)
	if err != nil {
		return a.usageError(name, "%v", err)
	}
	return a.withStore(func(cfg *config.Config, st store.Store) int {
		if err := st.SetMailboxPassword(a.ctx, addr, hash); err != nil {
			return a.storeError(err)
		}
		a.registryEvent(st, "POP3 password set for "+addr, map[string]string{"mailbox": addr})
		fmt.Fprintf(a.stdout, "Password set for mailbox %s.\n", addr)
		if !cfg.POP3.Enabled {
			fmt.Fprintf(a.stdout, "Note: pop3.enabled is false in %s; the mailbox is served once you enable it.\n", a.configPath)
		}
		return exitOK
	})
}

func (a *app) storeError(err error) int {
	fmt.Fprintf(a.stderr, "smsmilter: store error: %v\n", err)
	return exitFailed
}

func (a *app) registryEvent(st store.Store, msg string, fields map[string]string) {
	st.LogEvent(a.ctx, store.Event{Time: time.Now(), Kind: store.EventRegistry, Message: msg, Fields: fields})
}
