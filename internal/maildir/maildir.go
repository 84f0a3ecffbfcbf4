// Package maildir stores the POP3 plugin's mail: one Maildir (tmp, new, cur)
// per mailbox under a root directory, a mailbox being named by an email
// address.
//
// Delivery follows the Maildir protocol: the message is written under tmp/
// with a unique name, fsynced, renamed into new/ and the directory fsynced,
// so a crash leaves either no message or a whole one, and readers never see
// a partial file. Readers move new/ entries into cur/ when they list.
//
// Messages are stored byte for byte as delivered. What a POP3 client sees is
// the "wire form" (see Lines): every line ending (CRLF, a bare LF or a bare
// CR) becomes CRLF, and a last line without an ending gets one. Message.Size
// is the exact number of octets of that wire form, before dot-stuffing and
// without the terminating ".", which is what RFC 1939 asks LIST and STAT to
// report. The size is recorded in the file name as ",W=<octets>" (the same
// convention Dovecot uses), so listing does not read the messages; files
// dropped in by other tools without it are measured when listed.
package maildir

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// ErrInvalidMailbox is returned for a mailbox name that cannot name a
// mailbox (empty, too long, control characters).
var ErrInvalidMailbox = errors.New("maildir: invalid mailbox name")

// ErrNoMessage is returned by Open and Delete for an ID that is not in the
// mailbox.
var ErrNoMessage = errors.New("maildir: no such message")

// maxAddress is the longest mailbox name accepted: the RFC 5321 limit of a
// forward path, which also keeps the encoded directory name within NAME_MAX.
const maxAddress = 254

// Root is a directory holding one Maildir per mailbox. It is safe for
// concurrent use, also by several processes sharing the directory.
type Root struct {
	dir  string
	host string // sanitized host name, part of every unique name
	pid  int
	seq  atomic.Uint64
	now  func() time.Time
}

// Open returns the Root at dir, creating the directory (mode 0700) if needed.
func Open(dir string) (*Root, error) {
	return OpenWithClock(dir, time.Now)
}

// OpenWithClock is Open with the clock used for unique names (tests).
func OpenWithClock(dir string, now func() time.Time) (*Root, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("maildir: create root: %w", err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Root{dir: dir, host: sanitizeHost(host), pid: os.Getpid(), now: now}, nil
}

// Dir is the root directory.
func (r *Root) Dir() string { return r.dir }

// Mailbox returns the mailbox named by address (compared case-insensitively:
// the name is lower-cased). It does not create anything on disk: a mailbox
// that never received mail lists as empty.
func (r *Root) Mailbox(address string) (*Mailbox, error) {
	name, err := Normalize(address)
	if err != nil {
		return nil, err
	}
	return &Mailbox{root: r, name: name, dir: filepath.Join(r.dir, EncodeName(name))}, nil
}

// Deliver stores msg in the mailbox named by mailbox and returns the new
// message's ID.
func (r *Root) Deliver(mailbox string, msg []byte) (string, error) {
	m, err := r.Mailbox(mailbox)
	if err != nil {
		return "", err
	}
	return m.Deliver(msg)
}

// Normalize lower-cases a mailbox name and checks it can name a mailbox.
func Normalize(address string) (string, error) {
	if address == "" || len(address) > maxAddress || !utf8.ValidString(address) {
		return "", fmt.Errorf("%w: %q", ErrInvalidMailbox, address)
	}
	for _, c := range address {
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: %q has control characters", ErrInvalidMailbox, address)
		}
	}
	return strings.ToLower(address), nil
}

// EncodeName turns a (normalized) mailbox name into a directory name that is
// always a single, safe path element: bytes outside [a-z0-9@_+-] and '.' are
// written as %XX, and so is a leading '.', so "..", "." and hidden names,
// "/" and "\" can never come through. The encoding is reversible
// (DecodeName) and readable for ordinary addresses: ops@example.com stays
// ops@example.com.
func EncodeName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '@', c == '_', c == '+', c == '-':
			b.WriteByte(c)
		case c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// DecodeName reverses EncodeName.
func DecodeName(enc string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(enc); i++ {
		if enc[i] != '%' {
			b.WriteByte(enc[i])
			continue
		}
		if i+2 >= len(enc) {
			return "", fmt.Errorf("%w: bad escape in %q", ErrInvalidMailbox, enc)
		}
		v, err := strconv.ParseUint(enc[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("%w: bad escape in %q", ErrInvalidMailbox, enc)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// Mailbox is one Maildir. Its methods are safe for concurrent use.
type Mailbox struct {
	root *Root
	name string
	dir  string

	mu    sync.Mutex
	files map[string]string // ID -> path relative to dir, from the last List
}

// Name is the normalized mailbox name.
func (m *Mailbox) Name() string { return m.name }

// Message is one message as listed.
type Message struct {
	ID   string // stable unique name (the Maildir base name)
	Size int64  // octets of the wire form (CRLF line ends), see package doc
}

// UID is the message's POP3 unique-id (RFC 1939: 1 to 70 characters in
// 0x21..0x7E): the ID itself when it qualifies, else a digest of it, so
// foreign file names still get a valid, stable UIDL.
func (msg Message) UID() string {
	if len(msg.ID) >= 1 && len(msg.ID) <= 70 {
		ok := true
		for i := 0; i < len(msg.ID); i++ {
			if msg.ID[i] < 0x21 || msg.ID[i] > 0x7e {
				ok = false
				break
			}
		}
		if ok {
			return msg.ID
		}
	}
	return "X" + digest(msg.ID)
}

// Deliver stores msg and returns its ID.
func (m *Mailbox) Deliver(msg []byte) (string, error) {
	if err := m.ensureDirs(); err != nil {
		return "", err
	}
	id, err := m.root.uniqueID()
	if err != nil {
		return "", err
	}
	wire, _ := WireSize(bytes.NewReader(msg)) // a bytes.Reader never fails
	name := fmt.Sprintf("%s,S=%d,W=%d", id, len(msg), wire)
	tmp := filepath.Join(m.dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("maildir: deliver to %s: %w", m.name, err)
	}
	_, err = f.Write(msg)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(m.dir, "new", name))
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("maildir: deliver to %s: %w", m.name, err)
	}
	// The rename is durable only once the directory entry is on disk.
	if err := syncDir(filepath.Join(m.dir, "new")); err != nil {
		return "", fmt.Errorf("maildir: deliver to %s: %w", m.name, err)
	}
	return id, nil
}

// ensureDirs creates the mailbox's tmp, new and cur, fsyncing the parents
// the first time so a fresh mailbox survives a crash too.
func (m *Mailbox) ensureDirs() error {
	if _, err := os.Stat(filepath.Join(m.dir, "cur")); err == nil {
		return nil
	}
	created := false
	if _, err := os.Stat(m.dir); errors.Is(err, fs.ErrNotExist) {
		created = true
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(m.dir, sub), 0o700); err != nil {
			return fmt.Errorf("maildir: create mailbox %s: %w", m.name, err)
		}
	}
	if err := syncDir(m.dir); err != nil {
		return fmt.Errorf("maildir: create mailbox %s: %w", m.name, err)
	}
	if created {
		if err := syncDir(m.root.dir); err != nil {
			return fmt.Errorf("maildir: create mailbox %s: %w", m.name, err)
		}
	}
	return nil
}

// List moves newly delivered messages into cur/ and returns every message,
// oldest delivery first. A mailbox that does not exist yet is empty.
func (m *Mailbox) List() ([]Message, error) {
	if err := m.moveNew(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(m.dir, "cur"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: list %s: %w", m.name, err)
	}
	type item struct {
		Message
		file string
	}
	items := make([]item, 0, len(entries))
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		rel := filepath.Join("cur", e.Name())
		id, size, ok := parseName(e.Name())
		if !ok {
			n, err := m.measure(rel)
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted meanwhile
			}
			if err != nil {
				return nil, err
			}
			size = n
		}
		items = append(items, item{Message{ID: id, Size: size}, rel})
	}
	sort.Slice(items, func(i, j int) bool { return lessID(items[i].ID, items[j].ID) })
	files := make(map[string]string, len(items))
	out := make([]Message, len(items))
	for i, it := range items {
		files[it.ID] = it.file
		out[i] = it.Message
	}
	m.mu.Lock()
	m.files = files
	m.mu.Unlock()
	return out, nil
}

func (m *Mailbox) moveNew() error {
	entries, err := os.ReadDir(filepath.Join(m.dir, "new"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("maildir: list %s: %w", m.name, err)
	}
	moved := false
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		base, _, _ := strings.Cut(e.Name(), ":")
		err := os.Rename(filepath.Join(m.dir, "new", e.Name()), filepath.Join(m.dir, "cur", base+":2,"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // another reader moved it first
		}
		if err != nil {
			return fmt.Errorf("maildir: list %s: %w", m.name, err)
		}
		moved = true
	}
	if moved {
		if err := syncDir(filepath.Join(m.dir, "cur")); err != nil {
			return fmt.Errorf("maildir: list %s: %w", m.name, err)
		}
	}
	return nil
}

func (m *Mailbox) measure(rel string) (int64, error) {
	f, err := os.Open(filepath.Join(m.dir, rel))
	if err != nil {
		return 0, fmt.Errorf("maildir: read %s: %w", m.name, err)
	}
	defer f.Close()
	n, err := WireSize(f)
	if err != nil {
		return 0, fmt.Errorf("maildir: read %s: %w", m.name, err)
	}
	return n, nil
}

// find returns the path of message id, from the last listing or by looking.
func (m *Mailbox) find(id string) (string, error) {
	m.mu.Lock()
	rel, ok := m.files[id]
	m.mu.Unlock()
	if ok {
		return filepath.Join(m.dir, rel), nil
	}
	for _, sub := range []string{"cur", "new"} {
		entries, err := os.ReadDir(filepath.Join(m.dir, sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("maildir: find in %s: %w", m.name, err)
		}
		for _, e := range entries {
			if got, _, _ := parseName(e.Name()); got == id {
				return filepath.Join(m.dir, sub, e.Name()), nil
			}
		}
	}
	return "", fmt.Errorf("%w: %s in %s", ErrNoMessage, id, m.name)
}

// Open returns the stored bytes of message id (as delivered; pass them
// through Lines for the wire form).
func (m *Mailbox) Open(id string) (io.ReadCloser, error) {
	p, err := m.find(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s in %s", ErrNoMessage, id, m.name)
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: read %s: %w", m.name, err)
	}
	return f, nil
}

// Delete removes message id. Deleting a message that is already gone is not
// an error (two sessions, or a retry after a crash, may both try).
func (m *Mailbox) Delete(id string) error {
	p, err := m.find(id)
	if errors.Is(err, ErrNoMessage) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("maildir: delete from %s: %w", m.name, err)
	}
	m.mu.Lock()
	delete(m.files, id)
	m.mu.Unlock()
	return nil
}

// Sync makes earlier deletions durable.
func (m *Mailbox) Sync() error {
	if err := syncDir(filepath.Join(m.dir, "cur")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("maildir: sync %s: %w", m.name, err)
	}
	return nil
}

// Lines calls fn with each line of the message read from r, without its line
// ending. CRLF, a bare LF and a bare CR each end a line; a last line without
// an ending is still a line; an empty input has no lines. fn must not keep
// line after it returns. This is the one definition of the wire form: a POP3
// server sends each line followed by CRLF, and WireSize counts exactly that.
func Lines(r io.Reader, fn func(line []byte) error) error {
	br := bufio.NewReaderSize(r, 32*1024)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		// Split the chunk at bare CRs; a CR right before the LF (or at the
		// very end of a chunk followed by LF) is part of a CRLF.
		for len(chunk) > 0 {
			i := bytes.IndexAny(chunk, "\r\n")
			if i < 0 {
				line = append(line, chunk...)
				break
			}
			line = append(line, chunk[:i]...)
			sep := chunk[i]
			chunk = chunk[i+1:]
			if sep == '\r' {
				if len(chunk) > 0 && chunk[0] == '\n' {
					chunk = chunk[1:]
				} else if len(chunk) == 0 && errors.Is(err, bufio.ErrBufferFull) {
					// The CR ended a full buffer: the LF of its CRLF may
					// be the next byte.
					if b, perr := br.Peek(1); perr == nil && b[0] == '\n' {
						br.Discard(1)
					}
				}
			}
			if ferr := fn(line); ferr != nil {
				return ferr
			}
			line = line[:0]
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) > 0 {
				return fn(line)
			}
			return nil
		default:
			return err
		}
	}
}

// WireSize is the number of octets of the wire form of the message in r.
func WireSize(r io.Reader) (int64, error) {
	var n int64
	err := Lines(r, func(line []byte) error {
		n += int64(len(line)) + 2
		return nil
	})
	return n, err
}

func (r *Root) uniqueID() (string, error) {
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("maildir: unique name: %w", err)
	}
	t := r.now()
	return fmt.Sprintf("%d.M%06dP%dQ%dR%s.%s", t.Unix(), t.Nanosecond()/1000, r.pid,
		r.seq.Add(1), hex.EncodeToString(rnd[:]), r.host), nil
}

// sanitizeHost keeps a host name that cannot break the name's syntax
// ("/", ":" and "," are special in Maildir names) and keeps IDs short
// enough to be POP3 unique-ids.
func sanitizeHost(h string) string {
	var b strings.Builder
	for i := 0; i < len(h) && b.Len() < 20; i++ {
		c := h[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// parseName splits a Maildir file name into the ID (the part before the
// first ',' or ':') and the wire size from ",W=", if present.
func parseName(name string) (id string, size int64, ok bool) {
	base, _, _ := strings.Cut(name, ":")
	id, fields, _ := strings.Cut(base, ",")
	for _, f := range strings.Split(fields, ",") {
		if v, found := strings.CutPrefix(f, "W="); found {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil && n >= 0 {
				return id, n, true
			}
		}
	}
	return id, 0, false
}

// lessID orders IDs by delivery time (seconds, then microseconds), falling
// back to the name, so message numbers follow arrival order.
func lessID(a, b string) bool {
	as, au := idTime(a)
	bs, bu := idTime(b)
	if as != bs {
		return as < bs
	}
	if au != bu {
		return au < bu
	}
	return a < b
}

func idTime(id string) (sec, usec int64) {
	s, rest, _ := strings.Cut(id, ".")
	sec, _ = strconv.ParseInt(s, 10, 64)
	if rest, ok := strings.CutPrefix(rest, "M"); ok {
		end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(rest)
		}
		usec, _ = strconv.ParseInt(rest[:end], 10, 64)
	}
	return sec, usec
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}
