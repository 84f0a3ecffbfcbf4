package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// PostfixOptions configure a private Postfix instance.
type PostfixOptions struct {
	// RelayTo is the host:port every mail is relayed to (a Sink): the
	// instance has no local domains.
	RelayTo string
	// MainCF is main.cf text appended to the instance's own settings, e.g.
	// the milter snippet of examples/postfix/main.cf (see Example).
	MainCF string
	// Settings are main.cf parameters applied last (postconf -e), each
	// "name = value".
	Settings []string
	// MasterCF is master.cf text appended to the instance's services.
	MasterCF string
}

// Postfix is a private Postfix instance: its own config, queue and data
// folders under a temporary folder, smtpd on a loopback port, every
// service unchrooted, and its log in a file of its own.
type Postfix struct {
	Dir       string // the instance's folder (mode 755)
	ConfigDir string // for postfix -c, postqueue -c, sendmail -C
	QueueDir  string
	LogFile   string
	Port      int    // smtpd
	Addr      string // 127.0.0.1:Port

	t        testing.TB
	running  bool
	watchdog *proc
	bin      map[string]string // postfix, postconf, postqueue, sendmail
}

// baseMasterCF are the services a relay-only Postfix needs, every one with
// chroot n (the queue folder is not set up as a chroot jail).
const baseMasterCF = `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// Example returns a file of examples/postfix with smsmilter's address
// (inet:127.0.0.1:8890 in the examples) replaced by milter, so the suite
// runs the very settings the documentation gives.
func Example(t testing.TB, name, milter string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.ModuleRoot(), "examples", "postfix", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "inet:127.0.0.1:8890", milter)
}

// StartPostfix configures and starts a private instance; t.Cleanup stops
// it (and kills what is left of it) whatever the test's outcome.
func StartPostfix(t testing.TB, o PostfixOptions) *Postfix {
	t.Helper()
	NeedRoot(t)
	bin := map[string]string{}
	for _, name := range []string{"postfix", "postconf", "postqueue", "sendmail"} {
		bin[name] = testutil.NeedCmd(t, name) // on PATH or in /usr/sbin
	}
	// Postfix needs every folder above its queue to be enterable and the
	// instance folder not writable by others (it refuses a world-writable
	// queue); OpenDir's folder is 777, so nest one at 755.
	dir := filepath.Join(testutil.OpenDir(t), "postfix")
	p := &Postfix{t: t, Dir: dir, ConfigDir: filepath.Join(dir, "etc"), QueueDir: filepath.Join(dir, "queue"),
		LogFile: filepath.Join(dir, "maillog"), bin: bin}
	for _, d := range []string{dir, p.ConfigDir, p.QueueDir, filepath.Join(dir, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755)
	}
	if err := os.Chown(filepath.Join(dir, "data"), postfixUID(t), -1); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile("/etc/postfix/dynamicmaps.cf"); err == nil {
		os.WriteFile(filepath.Join(p.ConfigDir, "dynamicmaps.cf"), b, 0o644)
	}

	t.Cleanup(func() {
		if t.Failed() || showLogs() {
			t.Logf("Postfix log (%s), last lines:\n%s", p.LogFile, Tail(p.Log(), 60))
		}
		p.Stop()
	})
	for attempt := 0; ; attempt++ {
		p.Port = testutil.FreePort(t)
		p.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port))
		p.writeConfig(o)
		p.postfix("check")
		p.postfix("start")
		p.running = true
		p.startWatchdog()
		if waitListening(p.Addr, nil, 10*time.Second) {
			return p
		}
		p.Stop()
		if attempt == 2 {
			t.Fatalf("Postfix smtpd did not listen on %s:\n%s", p.Addr, Tail(p.Log(), 30))
		}
	}
}

func postfixUID(t testing.TB) int {
	out, err := exec.Command("id", "-u", "postfix").Output()
	if err != nil {
		t.Fatalf("no postfix user: %v", err)
	}
	uid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

func (p *Postfix) writeConfig(o PostfixOptions) {
	if o.RelayTo == "" {
		p.t.Fatal("PostfixOptions.RelayTo is required (a Sink's Addr)")
	}
	var main strings.Builder
	fmt.Fprintf(&main, `# A private relay-only Postfix for smsmilter's end-to-end tests.
compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
myhostname = mx.e2e.test
mydomain = e2e.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = %[2]s
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
biff = no
# Retries of deferred mail are what the tests trigger (postqueue -f).
queue_run_delay = 300s
minimal_backoff_time = 300s
`, p.Dir, relayhost(o.RelayTo))
	if o.MainCF != "" {
		main.WriteString("\n# Added by the test:\n")
		main.WriteString(o.MainCF)
		main.WriteString("\n")
	}
	master := fmt.Sprintf("%s inet n - n - - smtpd\n%s", p.Addr, baseMasterCF)
	if o.MasterCF != "" {
		master += o.MasterCF + "\n"
	}
	if err := os.WriteFile(filepath.Join(p.ConfigDir, "main.cf"), []byte(main.String()), 0o644); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.ConfigDir, "master.cf"), []byte(master), 0o644); err != nil {
		p.t.Fatal(err)
	}
	for _, s := range o.Settings {
		p.Postconf(s)
	}
}

func relayhost(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return "[" + host + "]:" + port
}

// postfix runs `postfix -c DIR CMD` and fails the test if it fails.
func (p *Postfix) postfix(args ...string) string {
	p.t.Helper()
	out, err := p.run("postfix", append([]string{"-c", p.ConfigDir}, args...)...)
	if err != nil {
		p.t.Fatalf("postfix %s: %v\n%s\n%s", strings.Join(args, " "), err, out, Tail(p.Log(), 20))
	}
	return out
}

func (p *Postfix) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if path, ok := p.bin[name]; ok {
		name = path
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Postconf sets a main.cf parameter ("name = value") in place.
func (p *Postfix) Postconf(setting string) {
	p.t.Helper()
	name, value, ok := strings.Cut(setting, "=")
	if !ok {
		p.t.Fatalf("Postconf %q: not name = value", setting)
	}
	out, err := p.run("postconf", "-c", p.ConfigDir, "-e", strings.TrimSpace(name)+"="+strings.TrimSpace(value))
	if err != nil {
		p.t.Fatalf("postconf -e %s: %v\n%s", setting, err, out)
	}
}

// Reload makes the running instance re-read its config.
func (p *Postfix) Reload() {
	p.t.Helper()
	p.postfix("reload")
	// smtpd processes finish their session and exit; new ones get the new
	// config. Give master a moment to act on the signal.
	time.Sleep(300 * time.Millisecond)
}

// startWatchdog makes sure the instance is stopped should the test binary
// die without its cleanups (go test -timeout panics, kill -9): master runs
// detached, so nothing else would stop it.
func (p *Postfix) startWatchdog() {
	if p.watchdog == nil {
		p.watchdog = startWatchdog(`exec "$3" -c "$2" stop`, p.ConfigDir, p.bin["postfix"])
	}
}

// Stop stops the instance and waits for its master to exit; anything left
// is killed. Safe to call twice.
func (p *Postfix) Stop() {
	if !p.running {
		return
	}
	p.running = false
	if p.watchdog != nil {
		p.watchdog.kill()
		p.watchdog = nil
	}
	pid := p.masterPID()
	p.run("postfix", "-c", p.ConfigDir, "stop")
	deadline := time.Now().Add(10 * time.Second)
	for pid > 0 && processAlive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pid > 0 && processAlive(pid) {
		p.run("postfix", "-c", p.ConfigDir, "abort")
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// master's children exit when master is gone; wait for the ones of this
	// instance (their command line names our config folder, or they hold
	// our queue as working directory).
	deadline = time.Now().Add(5 * time.Second)
	for {
		left := p.processes()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Postfix) masterPID() int {
	b, err := os.ReadFile(filepath.Join(p.QueueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func processAlive(pid int) bool {
	// A zombie (exited, not yet reaped by its parent) counts as gone.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// processes lists the live processes working in this instance's queue
// folder (every Postfix daemon chdirs there).
func (p *Postfix) processes() []int {
	return Processes(func(pid int) bool {
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		return err == nil && strings.HasPrefix(cwd, p.QueueDir)
	})
}

// Processes lists the live processes (zombies left out) match accepts.
func Processes(match func(pid int) bool) []int {
	var pids []int
	for _, pid := range allPIDs() {
		if match(pid) && processAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Log is the instance's mail log so far.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(p.LogFile)
	return string(b)
}

// LogLines returns the log lines containing every one of subs.
func (p *Postfix) LogLines(subs ...string) []string { return LinesWith(p.Log(), subs...) }

// Flush asks Postfix to retry every queued message now (postqueue -f; it
// also wakes pickup for mail in maildrop).
func (p *Postfix) Flush() {
	p.t.Helper()
	if out, err := p.run("postqueue", "-c", p.ConfigDir, "-f"); err != nil {
		p.t.Fatalf("postqueue -f: %v\n%s", err, out)
	}
}

// QueueEntry is one message in Postfix's queue (postqueue -j).
type QueueEntry struct {
	QueueName  string `json:"queue_name"` // maildrop, incoming, active, deferred, hold
	QueueID    string `json:"queue_id"`
	Sender     string `json:"sender"`
	Recipients []struct {
		Address     string `json:"address"`
		DelayReason string `json:"delay_reason"`
	} `json:"recipients"`
}

// Queue lists the messages Postfix holds.
func (p *Postfix) Queue() []QueueEntry {
	p.t.Helper()
	out, err := p.run("postqueue", "-c", p.ConfigDir, "-j")
	if err != nil {
		p.t.Fatalf("postqueue -j: %v\n%s", err, out)
	}
	var q []QueueEntry
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e QueueEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			p.t.Fatalf("postqueue -j: %q: %v", line, err)
		}
		q = append(q, e)
	}
	sort.Slice(q, func(i, j int) bool { return q[i].QueueID < q[j].QueueID })
	return q
}

// WaitQueueEmpty waits until Postfix has delivered (or discarded) all it
// holds.
func (p *Postfix) WaitQueueEmpty(timeout time.Duration) {
	p.t.Helper()
	Eventually(p.t, timeout, "an empty Postfix queue", func() bool { return len(p.Queue()) == 0 })
}

// Sendmail submits msg through Postfix's sendmail command (pickup, then
// cleanup with non_smtpd_milters), as a local program would.
func (p *Postfix) Sendmail(from string, rcpts []string, msg []byte) {
	p.t.Helper()
	args := append([]string{"-C", p.ConfigDir, "-i", "-f", from, "--"}, rcpts...)
	cmd := exec.Command(p.bin["sendmail"], args...)
	cmd.Stdin = bytes.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("sendmail: %v\n%s", err, out)
	}
}

// Get returns a main.cf parameter's value as the instance sees it.
func (p *Postfix) Get(name string) string {
	p.t.Helper()
	out, err := p.run("postconf", "-c", p.ConfigDir, "-h", name)
	if err != nil {
		p.t.Fatalf("postconf -h %s: %v\n%s", name, err, out)
	}
	return strings.TrimSpace(out)
}
