package registry

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/store"
)

func TestRule(t *testing.T) {
	tests := []struct {
		spec    RuleSpec
		want    store.Rule // checked fields: Pattern, Security, IPs, thresholds
		wantErr string
	}{
		{spec: RuleSpec{Kind: "address", Pattern: "Alice@Example.COM", User: "ops"},
			want: store.Rule{Pattern: "alice@example.com", Security: "spf", DKIM: "gray", SPF: "gray", DMARC: "gray"}},
		{spec: RuleSpec{Kind: "domain", Pattern: "Example.com.", User: "ops", Security: "auth", DKIM: "pass"},
			want: store.Rule{Pattern: "example.com", Security: "auth", DKIM: "pass", SPF: "gray", DMARC: "gray"}},
		{spec: RuleSpec{Kind: "domain", Pattern: "example.com", User: "ops", Security: "ip", IPs: []string{"192.0.2.0/24", "2001:db8::1"}},
			want: store.Rule{Pattern: "example.com", Security: "ip", IPs: []string{"192.0.2.0/24", "2001:db8::1/128"}, DKIM: "gray", SPF: "gray", DMARC: "gray"}},
		{spec: RuleSpec{Kind: "ip", Pattern: "192.0.2.0/24", User: "ops"},
			want: store.Rule{Pattern: "192.0.2.0/24", Security: "ip", IPs: []string{"192.0.2.0/24"}, DKIM: "fail", SPF: "fail", DMARC: "fail"}},
		{spec: RuleSpec{Kind: "ip", Pattern: "192.0.2.7", User: "ops", SPF: "pass"},
			want: store.Rule{Pattern: "192.0.2.7/32", Security: "ip", IPs: []string{"192.0.2.7/32"}, DKIM: "fail", SPF: "pass", DMARC: "fail"}},
		{spec: RuleSpec{Kind: "address", Pattern: "bob@", User: "ops"}, wantErr: `"bob@" is not an email address`},
		{spec: RuleSpec{Kind: "address", Pattern: "Bob <bob@example.com>", User: "ops"}, wantErr: "is not an email address"},
		{spec: RuleSpec{Kind: "address", Pattern: "bob@example", User: "ops"}, wantErr: "is not an email address"},
		{spec: RuleSpec{Kind: "address", Pattern: "bob@example.com", User: ""}, wantErr: "forwarding user is needed"},
		{spec: RuleSpec{Kind: "address", Pattern: "bob@example.com", User: "ops", Security: "dkim"}, wantErr: `unknown security type "dkim"`},
		{spec: RuleSpec{Kind: "address", Pattern: "bob@example.com", User: "ops", DMARC: "strict"}, wantErr: `--dmarc "strict": want pass, gray or fail`},
		{spec: RuleSpec{Kind: "address", Pattern: "bob@example.com", User: "ops", Security: "ip"}, wantErr: "needs the servers' addresses"},
		{spec: RuleSpec{Kind: "address", Pattern: "bob@example.com", User: "ops", IPs: []string{"192.0.2.1"}}, wantErr: "only used with --security ip"},
		{spec: RuleSpec{Kind: "domain", Pattern: "ex ample.com", User: "ops"}, wantErr: "is not a domain name"},
		{spec: RuleSpec{Kind: "domain", Pattern: "com", User: "ops"}, wantErr: "is not a domain name"},
		{spec: RuleSpec{Kind: "ip", Pattern: "10.0.0.1/8", User: "ops"}, wantErr: "did you mean 10.0.0.0/8?"},
		{spec: RuleSpec{Kind: "ip", Pattern: "300.1.1.1", User: "ops"}, wantErr: "is not an IP address or CIDR"},
		{spec: RuleSpec{Kind: "ip", Pattern: "192.0.2.0/24", User: "ops", Security: "spf"}, wantErr: "does not apply"},
	}
	for _, tt := range tests {
		r, err := Rule(tt.spec)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Rule(%+v) error %v; want %q", tt.spec, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Rule(%+v): %v", tt.spec, err)
			continue
		}
		if r.Pattern != tt.want.Pattern || r.Security != tt.want.Security || strings.Join(r.IPs, ",") != strings.Join(tt.want.IPs, ",") ||
			r.DKIM != tt.want.DKIM || r.SPF != tt.want.SPF || r.DMARC != tt.want.DMARC {
			t.Errorf("Rule(%+v) = %+v; want %+v", tt.spec, r, tt.want)
		}
		if (r.Kind == store.KindDomain) != regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(r.Token) {
			t.Errorf("Rule(%+v) token %q", tt.spec, r.Token)
		}
	}
}

func TestUserAndSenderID(t *testing.T) {
	good := []store.User{{Name: "ops", SenderID: "ACME"}, {Name: "sales.eu", SenderID: "+447400123456", TPS: 2, Daily: 100}, {Name: "x", SenderID: "Acme Ltd 01"}}
	for _, u := range good {
		if err := User(u); err != nil {
			t.Errorf("User(%+v): %v", u, err)
		}
	}
	bad := map[string]store.User{
		"user name":         {Name: "ops team", SenderID: "ACME"},
		"sender ID is need": {Name: "ops"},
		"at most 15 digits": {Name: "ops", SenderID: "+1234567890123456"},
		"up to 11 letters":  {Name: "ops", SenderID: "ACME-CORPORATION"},
		"negative":          {Name: "ops", SenderID: "ACME", TPS: -1},
	}
	for want, u := range bad {
		if err := User(u); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("User(%+v) = %v; want %q", u, err, want)
		}
	}
}

func TestReadAddressCSV(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		rows    []string // "num:pattern" or "num:error text"
		fileErr string
	}{
		{name: "plain", in: "email,user\nalice@example.com,ops\nbob@example.com,sales\n",
			rows: []string{"2:alice@example.com", "3:bob@example.com"}},
		{name: "bom and crlf", in: "\xef\xbb\xbfemail,user,security\r\nalice@example.com,ops,auth\r\n",
			rows: []string{"2:alice@example.com"}},
		{name: "quoted fields", in: "email,user,security,dkim,spf,dmarc\n\"alice@example.com\",\"ops\",\"spf\",\"pass\",\"gray\",\"fail\"\n",
			rows: []string{"2:alice@example.com"}},
		{name: "quoted field with comma is one bad value", in: "email,user\n\"alice@example.com,bob@example.com\",ops\n",
			rows: []string{"2:is not an email address"}},
		{name: "duplicate rows", in: "email,user\nalice@example.com,ops\nALICE@example.com,ops\n",
			rows: []string{"2:alice@example.com", "3:listed twice (also row 2)"}},
		{name: "bad address", in: "email,user\na@example.com,ops\nb@example.com,ops\nc@example.com,ops\nd@example.com,ops\ne@example.com,ops\nf@example.com,ops\nbob@,ops\n",
			rows: []string{"2:a@example.com", "3:b@example.com", "4:c@example.com", "5:d@example.com", "6:e@example.com", "7:f@example.com", `8:"bob@" is not an email address`}},
		{name: "blank lines skipped, numbers kept", in: "email,user\n\nalice@example.com,ops\n", rows: []string{"3:alice@example.com"}},
		{name: "wrong field count", in: "email,user\nalice@example.com,ops,spf,pass\n", rows: []string{"2:give dkim, spf and dmarc together"}},
		{name: "security ip", in: "email,user,security\nalice@example.com,ops,ip\n", rows: []string{"2:needs an IP list"}},
		{name: "empty file", in: "", fileErr: "the file is empty"},
		{name: "only a bom", in: "\xef\xbb\xbf", fileErr: "the file is empty"},
		{name: "no header", in: "alice@example.com,ops\n", fileErr: "row 1: header"},
		{name: "bad quoting", in: "email,user\n\"alice@example.com,ops\n", fileErr: "row 2:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := ReadAddressCSV(strings.NewReader(tt.in))
			if tt.fileErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fileErr) {
					t.Fatalf("error %v; want %q", err, tt.fileErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(tt.rows) {
				t.Fatalf("%d rows; want %d: %+v", len(rows), len(tt.rows), rows)
			}
			for i, w := range tt.rows {
				num, want, _ := strings.Cut(w, ":")
				got := rows[i].Rule.Pattern
				if rows[i].Err != nil {
					got = rows[i].Err.Error()
				}
				if num != strconv.Itoa(rows[i].Num) || !strings.Contains(got, want) {
					t.Errorf("row %d: %d %q; want %s %q", i, rows[i].Num, got, num, want)
				}
			}
		})
	}
}

// FuzzReadAddressCSV: any bytes give rows or a file error, never a panic;
// every accepted row is a valid, lower-cased address rule.
func FuzzReadAddressCSV(f *testing.F) {
	f.Add([]byte("email,user\nalice@example.com,ops\n"))
	f.Add([]byte("\xef\xbb\xbfemail,user,security,dkim,spf,dmarc\r\n\"a@b.example\",ops,none,pass,pass,pass\r\n"))
	f.Add([]byte("email,user\n\"unterminated,ops\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := ReadAddressCSV(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		for _, r := range rows {
			if r.Err != nil {
				continue
			}
			if r.Num < 2 {
				t.Fatalf("data row numbered %d", r.Num)
			}
			if _, err := Address(r.Rule.Pattern); err != nil || r.Rule.Pattern != strings.ToLower(r.Rule.Pattern) {
				t.Fatalf("accepted %q: %v", r.Rule.Pattern, err)
			}
		}
	})
}
