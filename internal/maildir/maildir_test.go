package maildir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEncodeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ops@example.com", "ops@example.com"},
		{"a.b+tag@x-y.example", "a.b+tag@x-y.example"},
		{"..", "%2E."},
		{".", "%2E"},
		{"../../etc/passwd", "%2E.%2F..%2Fetc%2Fpasswd"},
		{"a/b", "a%2Fb"},
		{`a\b`, "a%5Cb"},
		{"100%", "100%25"},
		{"with space", "with%20space"},
		{"ü@x", "%C3%BC@x"},
	}
	for _, tt := range tests {
		got := EncodeName(tt.in)
		if got != tt.want {
			t.Errorf("EncodeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := DecodeName(got)
		if err != nil || back != tt.in {
			t.Errorf("DecodeName(%q) = %q, %v; want %q", got, back, err, tt.in)
		}
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"Ops@Example.COM", "ops@example.com", true},
		{"", "", false},
		{"a\x00b", "", false},
		{"a\r\nb", "", false},
		{strings.Repeat("a", 255), "", false},
		{"\xff\xfe", "", false},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidMailbox) {
			t.Errorf("Normalize(%q) error %v is not ErrInvalidMailbox", tt.in, err)
		}
	}
}

func wire(raw string) string {
	var b strings.Builder
	Lines(strings.NewReader(raw), func(line []byte) error {
		b.Write(line)
		b.WriteString("\r\n")
		return nil
	})
	return b.String()
}

func TestLines(t *testing.T) {
	big := strings.Repeat("a", 32*1024-1)
	tests := []struct{ in, want string }{
		{"", ""},
		{"a", "a\r\n"},
		{"a\n", "a\r\n"},
		{"a\r\n", "a\r\n"},
		{"a\r", "a\r\n"},
		{"a\rb", "a\r\nb\r\n"},
		{"a\n\nb", "a\r\n\r\nb\r\n"},
		{"a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},
		{"a\r\r\n", "a\r\n\r\n"},
		{"\n", "\r\n"},
		{"x\x00y\n", "x\x00y\r\n"},
		// A CR that ends the reader's buffer still pairs with the LF after it.
		{big + "\r\nz", big + "\r\nz\r\n"},
		{big + "\rz", big + "\r\nz\r\n"},
		{big + "b\n", big + "b\r\n"},
	}
	for _, tt := range tests {
		got := wire(tt.in)
		if got != tt.want {
			t.Errorf("wire(%.40q) = %.60q, want %.60q", tt.in, got, tt.want)
		}
		n, err := WireSize(strings.NewReader(tt.in))
		if err != nil || n != int64(len(tt.want)) {
			t.Errorf("WireSize(%.40q) = %d, %v; want %d", tt.in, n, err, len(tt.want))
		}
	}
}

// refWire is an obviously correct wire form to fuzz Lines against.
func refWire(raw string) string {
	s := strings.ReplaceAll(raw, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return strings.ReplaceAll(s, "\n", "\r\n")
}

func FuzzLines(f *testing.F) {
	for _, s := range []string{"", "a", "a\r\nb", "a\rb\n", "\r\r\n\n", ".\r\n..\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if got, want := wire(raw), refWire(raw); got != want {
			t.Fatalf("wire(%q) = %q, want %q", raw, got, want)
		}
	})
}

func FuzzEncodeName(f *testing.F) {
	for _, s := range []string{"ops@example.com", "..", "../x", "a/b", ".hidden", "%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		enc := EncodeName(name)
		if strings.ContainsAny(enc, "/\\\x00") || strings.HasPrefix(enc, ".") {
			t.Fatalf("EncodeName(%q) = %q is not a safe path element", name, enc)
		}
		if name != "" && filepath.Base(enc) != enc {
			t.Fatalf("EncodeName(%q) = %q is not one path element", name, enc)
		}
		back, err := DecodeName(enc)
		if err != nil || back != name {
			t.Fatalf("DecodeName(EncodeName(%q)) = %q, %v", name, back, err)
		}
	})
}

func TestDeliverListReadDelete(t *testing.T) {
	dir := t.TempDir()
	clock := time.Unix(1700000000, 0)
	r, err := OpenWithClock(dir, func() time.Time { clock = clock.Add(time.Millisecond); return clock })
	if err != nil {
		t.Fatal(err)
	}
	msgs := []string{
		"Subject: one\n\nbody\n",
		"Subject: two\r\n\r\nline\r\n.dot\r\n",
		"no newline",
	}
	var ids []string
	for _, m := range msgs {
		id, err := r.Deliver("Ops@Example.com", []byte(m))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Delivered mail is under the encoded, lower-cased name, in new/.
	newDir := filepath.Join(dir, "ops@example.com", "new")
	if ents, _ := os.ReadDir(newDir); len(ents) != 3 {
		t.Fatalf("new/ has %d entries, want 3", len(ents))
	}
	mb, err := r.Mailbox("OPS@example.com")
	if err != nil {
		t.Fatal(err)
	}
	list, err := mb.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("List = %v, want 3 messages", list)
	}
	for i, m := range list {
		if m.ID != ids[i] {
			t.Errorf("message %d: ID %q, want %q (delivery order)", i, m.ID, ids[i])
		}
		if want := int64(len(refWire(msgs[i]))); m.Size != want {
			t.Errorf("message %d: Size %d, want %d", i, m.Size, want)
		}
		if uid := m.UID(); uid != m.ID || len(uid) > 70 {
			t.Errorf("message %d: UID %q", i, uid)
		}
		rc, err := mb.Open(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if string(got) != msgs[i] {
			t.Errorf("message %d stored as %q, want %q (as delivered)", i, got, msgs[i])
		}
	}
	if ents, _ := os.ReadDir(newDir); len(ents) != 0 {
		t.Errorf("new/ still has %d entries after List", len(ents))
	}
	if err := mb.Delete(ids[1]); err != nil {
		t.Fatal(err)
	}
	if err := mb.Delete(ids[1]); err != nil {
		t.Errorf("deleting twice: %v", err)
	}
	if _, err := mb.Open(ids[1]); !errors.Is(err, ErrNoMessage) {
		t.Errorf("Open deleted: %v, want ErrNoMessage", err)
	}
	// A fresh Mailbox value (another session) finds messages without a List.
	mb2, _ := r.Mailbox("ops@example.com")
	if rc, err := mb2.Open(ids[2]); err != nil {
		t.Errorf("Open without List: %v", err)
	} else {
		rc.Close()
	}
	list, _ = mb2.List()
	if len(list) != 2 {
		t.Errorf("after delete: %v", list)
	}
	if err := mb2.Sync(); err != nil {
		t.Error(err)
	}
}

func TestEmptyAndForeign(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := r.Mailbox("nobody@example.com")
	if list, err := mb.List(); err != nil || len(list) != 0 {
		t.Fatalf("List of a mailbox that never got mail = %v, %v", list, err)
	}
	// A message dropped in by another tool, without ,W=: measured.
	if _, err := r.Deliver("nobody@example.com", []byte("x")); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "nobody@example.com", "cur", "1.foreign.host:2,S")
	if err := os.WriteFile(foreign, []byte("a\nb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := mb.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "1.foreign.host" || list[0].Size != 6 {
		t.Fatalf("List = %+v", list)
	}
}

func TestTraversalStaysInside(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "root")
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"..", "../escape", "/abs", "a/../../b", ".", "./x"} {
		if _, err := r.Deliver(name, []byte("x\n")); err != nil {
			t.Fatalf("Deliver(%q): %v", name, err)
		}
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 1 || ents[0].Name() != "root" {
		t.Fatalf("something escaped the root: %v", ents)
	}
	ents, _ = os.ReadDir(dir)
	if len(ents) != 6 {
		t.Fatalf("root has %d mailboxes, want 6", len(ents))
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || strings.Contains(e.Name(), "/") {
			t.Errorf("unsafe directory name %q", e.Name())
		}
	}
}

func TestConcurrentDeliverUnique(t *testing.T) {
	r, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := r.Deliver("a@b", []byte(fmt.Sprintf("m%d\n", i)))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[id] {
				t.Errorf("duplicate ID %s", id)
			}
			seen[id] = true
		}()
	}
	wg.Wait()
	mb, _ := r.Mailbox("a@b")
	list, err := mb.List()
	if err != nil || len(list) != 50 {
		t.Fatalf("List: %d, %v", len(list), err)
	}
	if ents, _ := os.ReadDir(filepath.Join(r.Dir(), "a@b", "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ not empty: %v", ents)
	}
}

func TestUIDForeignNames(t *testing.T) {
	long := Message{ID: strings.Repeat("x", 80)}
	if uid := long.UID(); len(uid) > 70 || uid == long.ID {
		t.Errorf("UID of a long ID = %q", uid)
	}
	sp := Message{ID: "a b"}
	if uid := sp.UID(); strings.ContainsAny(uid, " ") {
		t.Errorf("UID with space = %q", uid)
	}
	if a, b := (Message{ID: "a b"}).UID(), (Message{ID: "a c"}).UID(); a == b {
		t.Errorf("different IDs share UID %q", a)
	}
	_ = bytes.MinRead
}
