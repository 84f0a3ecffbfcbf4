package sendmail

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

// defaultRoot is where e2e/sendmail/ci.sh unpacks Sendmail.
const defaultRoot = "/var/cache/smsmilter-e2e/sendmail"

// install is the unpacked Sendmail that ci.sh prepared.
type install struct {
	Root     string
	Sendmail string // the MTA binary
	Makemap  string
	M4       string
	CFDir    string // sendmail-cf's macros: m4/cf.m4, feature/, mailer/...
	Version  string // the Debian package version
}

// needSendmail finds the unpacked Sendmail and the programs the suite runs
// it with; missing, the test is skipped on a developer machine and fails
// in CI.
func needSendmail(t testing.TB) install {
	t.Helper()
	harness.NeedRoot(t)
	testutil.NeedCmd(t, "unshare")
	testutil.NeedCmd(t, "nsenter")
	root := os.Getenv("SMSMILTER_SENDMAIL_ROOT")
	if root == "" {
		root = defaultRoot
	}
	in := install{
		Root:     root,
		Sendmail: filepath.Join(root, "usr/libexec/sendmail/sendmail"),
		Makemap:  filepath.Join(root, "usr/libexec/sendmail/makemap"),
		M4:       filepath.Join(root, "usr/bin/m4"),
		CFDir:    filepath.Join(root, "usr/share/sendmail/cf"),
	}
	version, err := os.ReadFile(filepath.Join(root, ".complete"))
	for _, f := range []string{in.Sendmail, in.Makemap, in.M4, filepath.Join(in.CFDir, "m4", "cf.m4")} {
		if err == nil {
			_, err = os.Stat(f)
		}
	}
	if err != nil {
		msg := fmt.Sprintf("no unpacked Sendmail in %s (%v): run e2e/sendmail/ci.sh as root first", root, err)
		if testutil.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	in.Version = strings.TrimSpace(string(version))
	return in
}

// sandbox is run by unshare(1) in new mount and UTS namespaces, as
// `sh -c sandbox sh DIR PROGRAM ARGS...`. It gives Sendmail what it would
// otherwise take from the machine, without touching the machine:
//   - a host name of its own: at start Sendmail looks its host name up and,
//     when that fails, waits a minute before going on;
//   - DIR/hosts as /etc/hosts (the names of the test's hosts, so no DNS
//     is needed) and DIR/resolv.conf (a resolver on 127.0.0.1 that is not
//     there: a stray DNS lookup fails at once instead of hanging on an
//     unreachable one);
//   - a /dev of its own whose log is DIR/log.sock: Sendmail logs only to
//     syslog, and the suite reads that socket (the machine may have no
//     syslog daemon at all).
//
// Mounts in the new namespace are private (--propagation private): none of
// them is seen outside.
const sandbox = `set -e
d=$1
shift
echo mx.e2e.test >/proc/sys/kernel/hostname
mount --bind "$d/hosts" /etc/hosts
if [ -e /etc/resolv.conf ]; then mount --bind "$d/resolv.conf" /etc/resolv.conf; fi
mkdir -p "$d/hostdev"
mount --bind /dev "$d/hostdev"
mount -t tmpfs -o mode=755,size=64k smsmilter-e2e-dev /dev
for n in null zero full random urandom; do
  [ -e "$d/hostdev/$n" ] || continue
  : >"/dev/$n"
  mount --bind "$d/hostdev/$n" "/dev/$n"
done
ln -s "$d/log.sock" /dev/log
umount -l "$d/hostdev"
exec "$@"
`

// mtaOptions configure a private Sendmail.
type mtaOptions struct {
	// RelayTo is the host:port of the smart host every non-local mail goes
	// to (a Sink).
	RelayTo string
	// MC is sendmail.mc text added after the suite's own settings and the
	// mailers: examples/sendmail/smsmilter.mc.
	MC string
	// Access is the access map's text (FEATURE(`access_db')):
	// examples/sendmail/access.
	Access string
}

// Sendmail is a private Sendmail MTA: its own sendmail.cf generated with
// m4, queue, maps and mail log under a temporary folder, listening on
// loopback ports, and the matching submission program (MSP: submit.cf and
// its client queue) that local programs use.
type Sendmail struct {
	Dir            string
	CF             string // the MTA's sendmail.cf
	SubmitCF       string // the MSP's submit.cf
	QueueDir       string
	ClientQueueDir string
	LogFile        string // the mail log read from the syslog socket
	Port           int    // daemon MTA: smsmilter attached
	Addr           string
	BypassPort     int // daemon BYPASS: InputMailFilters= (no milter)
	BypassAddr     string

	t       testing.TB
	in      install
	cmd     *exec.Cmd
	done    chan struct{}
	ns      string // the daemon's mount namespace, "" if unknown
	logConn *net.UnixConn
	logDone chan struct{}
	logMu   sync.Mutex
	stopped bool
}

// mtaMC is the part of sendmail.mc that makes a private test instance of
// Sendmail: paths under the instance folder, loopback ports, no DNS, a
// smart host. What smsmilter needs comes after it, from the example.
// (« stands for m4's opening quote, which a Go raw string cannot hold.)
const mtaMC = `divert(-1)
# smsmilter end-to-end tests: a private Sendmail MTA (generated; see
# e2e/sendmail/mta_test.go).
divert(0)dnl
VERSIONID(«smsmilter e2e MTA')dnl
OSTYPE(«linux')dnl
define(«confDOMAIN_NAME', «mx.e2e.test')dnl
define(«QUEUE_DIR', «{{.Dir}}/mqueue')dnl
define(«STATUS_FILE', «{{.Dir}}/sendmail.st')dnl
define(«confPID_FILE', «{{.Dir}}/sendmail.pid')dnl
undefine(«ALIAS_FILE')dnl
define(«confSERVICE_SWITCH_FILE', «{{.Dir}}/service.switch')dnl
define(«confDONT_PROBE_INTERFACES', «True')dnl
dnl The instance folder is under /tmp (world-writable, sticky): Sendmail
dnl refuses maps and queues below such a folder unless told to trust the
dnl sticky bit.
define(«confDONT_BLAME_SENDMAIL', «TrustStickyBit')dnl
dnl 14: every milter action and every delivery in the mail log.
define(«confLOG_LEVEL', «14')dnl
define(«confMILTER_LOG_LEVEL', «14')dnl
define(«SMART_HOST', «relay:[127.0.0.1]')dnl
define(«RELAY_MAILER_ARGS', «TCP $h {{.RelayPort}}')dnl
FEATURE(«no_default_msa')dnl
FEATURE(«nocanonify')dnl
FEATURE(«accept_unresolvable_domains')dnl
FEATURE(«access_db', «hash -T<TMPF> {{.Dir}}/access')dnl
DAEMON_OPTIONS(«Family=inet, Name=MTA, Port={{.Port}}, Addr=127.0.0.1')dnl
dnl A daemon without the milter: a misconfigured port whose SMS mail must
dnl still never leave (the example's check_compat rules).
DAEMON_OPTIONS(«Family=inet, Name=BYPASS, Port={{.BypassPort}}, Addr=127.0.0.1, InputMailFilters=')dnl
MAILER(«local')dnl
MAILER(«smtp')dnl
dnl ---- examples/sendmail/smsmilter.mc follows
`

// submitMC is the MSP's submit.mc: sendmail(8) as local programs call it,
// which relays every message over SMTP to the MTA and keeps it in its
// client queue while the MTA tempfails.
const submitMC = `divert(-1)
# smsmilter end-to-end tests: the private MTA's submission program.
divert(0)dnl
VERSIONID(«smsmilter e2e MSP')dnl
define(«confCF_VERSION', «Submit')dnl
define(«__OSTYPE__',«')dnl
define(«confTIME_ZONE', «USE_TZ')dnl
define(«confDONT_INIT_GROUPS', «True')dnl
define(«confDOMAIN_NAME', «mx.e2e.test')dnl
dnl The MSP runs as a user of its own (Debian: smmsp), never root; this
dnl machine need not have smmsp.
define(«confRUN_AS_USER', «nobody')dnl
define(«MSP_QUEUE_DIR', «{{.Dir}}/clientmqueue')dnl
dnl Host names from the hosts file only (the MSP canonifies recipient
dnl domains; there is no DNS here).
define(«confSERVICE_SWITCH_FILE', «{{.Dir}}/service.switch')dnl
define(«confDONT_BLAME_SENDMAIL', «TrustStickyBit')dnl
define(«confLOG_LEVEL', «14')dnl
define(«RELAY_MAILER_ARGS', «TCP $h {{.Port}}')dnl
FEATURE(«msp', «[127.0.0.1]')dnl
`

// startSendmail configures and starts a private Sendmail; t.Cleanup stops
// it and every process it left, whatever the test's outcome.
func startSendmail(t testing.TB, in install, o mtaOptions) *Sendmail {
	t.Helper()
	if o.RelayTo == "" {
		t.Fatal("mtaOptions.RelayTo is required (a Sink's Addr)")
	}
	_, relayPort, err := net.SplitHostPort(o.RelayTo)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "smsmilter-sendmail-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	s := &Sendmail{t: t, in: in, Dir: dir,
		CF: filepath.Join(dir, "sendmail.cf"), SubmitCF: filepath.Join(dir, "submit.cf"),
		QueueDir: filepath.Join(dir, "mqueue"), ClientQueueDir: filepath.Join(dir, "clientmqueue"),
		LogFile: filepath.Join(dir, "maillog")}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Sendmail mail log (%s), last lines:\n%s", s.LogFile, harness.Tail(s.Log(), 80))
			if b, _ := os.ReadFile(filepath.Join(dir, "daemon.out")); len(b) > 0 {
				t.Logf("Sendmail daemon output:\n%s", b)
			}
		}
		s.Stop()
		os.RemoveAll(dir)
	})
	for _, d := range []string{s.QueueDir, s.ClientQueueDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The MSP (RunAsUser nobody) owns its client queue.
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	if err := os.Chown(s.ClientQueueDir, uid, -1); err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(s.ClientQueueDir, "sm-client.st")
	if err := os.WriteFile(st, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(st, uid, -1)
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeSandboxFiles(t, dir)
	write("service.switch", "hosts\tfiles\naliases\tfiles\n")
	write("sendmail.st", "") // Sendmail keeps statistics only if the file exists
	s.listenLog()

	s.Port, s.BypassPort = testutil.FreePort(t), testutil.FreePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	s.BypassAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.BypassPort))
	vars := map[string]string{"Dir": dir, "Port": strconv.Itoa(s.Port),
		"BypassPort": strconv.Itoa(s.BypassPort), "RelayPort": relayPort}
	write("sendmail.mc", expand(mtaMC, vars)+o.MC)
	write("submit.mc", expand(submitMC, vars))
	s.m4("sendmail.mc", s.CF)
	s.m4("submit.mc", s.SubmitCF)
	write("access", o.Access)
	s.makemap("access")

	s.start()
	return s
}

// expand fills {{.Name}} fields and turns « into m4's opening quote.
func expand(tmpl string, vars map[string]string) string {
	for k, v := range vars {
		tmpl = strings.ReplaceAll(tmpl, "{{."+k+"}}", v)
	}
	return strings.ReplaceAll(tmpl, "«", "`")
}

// m4 generates a .cf from a .mc in the instance folder with sendmail-cf's
// macros, as `make -C /etc/mail` does; any m4 or macro error fails the
// test.
func (s *Sendmail) m4(mc, cf string) {
	s.t.Helper()
	runM4(s.t, s.in, filepath.Join(s.Dir, mc), cf, filepath.Join(s.in.CFDir, "m4", "cf.m4"))
}

// runM4 runs m4 over the files before (cf.m4, when the .mc does not
// include it itself) and then mc, into cf; any output on stderr (m4
// errors, the macros' errprint warnings) fails the test.
func runM4(t testing.TB, in install, mc, cf string, before ...string) {
	t.Helper()
	cmd := exec.Command(in.M4, append(append([]string{"-D_CF_DIR_=" + in.CFDir + "/"}, before...), mc)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil || errOut.Len() > 0 {
		t.Fatalf("m4 %s: %v\n%s", mc, err, errOut.String())
	}
	if err := os.WriteFile(cf, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// makemap builds NAME.db from the text map NAME (makemap hash).
func (s *Sendmail) makemap(name string) {
	s.t.Helper()
	src, err := os.Open(filepath.Join(s.Dir, name))
	if err != nil {
		s.t.Fatal(err)
	}
	defer src.Close()
	cmd := exec.Command(s.in.Makemap, "-C", s.CF, "hash", filepath.Join(s.Dir, name))
	cmd.Stdin = src
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("makemap hash %s: %v\n%s", name, err, out)
	}
}

// listenLog opens DIR/log.sock, the sandbox's /dev/log, and copies every
// syslog datagram to the mail log file, one line each.
func (s *Sendmail) listenLog() {
	s.t.Helper()
	path := filepath.Join(s.Dir, "log.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		s.t.Fatalf("syslog socket: %v", err)
	}
	os.Chmod(path, 0o666) // delivery agents may run as another user
	f, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	s.logConn, s.logDone = c, make(chan struct{})
	go func() {
		defer close(s.logDone)
		defer f.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			line := strings.TrimRight(string(buf[:n]), "\n\x00")
			// "<PRI>Mmm dd hh:mm:ss sendmail[PID]: ...": drop the priority.
			if strings.HasPrefix(line, "<") {
				if i := strings.IndexByte(line, '>'); i > 0 && i < 5 {
					line = line[i+1:]
				}
			}
			s.logMu.Lock()
			f.WriteString(line + "\n")
			s.logMu.Unlock()
		}
	}()
}

// sandboxCmd returns a command running prog with args in new namespaces
// set up by the sandbox script from the files in dir (hosts, resolv.conf,
// log.sock).
func sandboxCmd(dir, prog string, args ...string) *exec.Cmd {
	all := append([]string{"--mount", "--uts", "--propagation", "private", "/bin/sh", "-c", sandbox, "sh", dir, prog}, args...)
	cmd := exec.Command("unshare", all...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TZ=UTC"}
	// Pdeathsig: a test binary that dies (a panic, go test's -timeout)
	// takes the daemon with it; Stop takes care of everything else.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// writeSandboxFiles writes the hosts and resolv.conf the sandbox mounts.
func writeSandboxFiles(t testing.TB, dir string) {
	t.Helper()
	for name, text := range map[string]string{
		"hosts":       "127.0.0.1\tmx.e2e.test mx localhost\n127.0.0.2\tclient.e2e.test client\n::1\tlocalhost ip6-localhost\n",
		"resolv.conf": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// start runs the daemon in the foreground (-bD) with a queue run every
// minute, and waits until both its ports accept connections.
func (s *Sendmail) start() {
	s.t.Helper()
	out, err := os.Create(filepath.Join(s.Dir, "daemon.out"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer out.Close()
	cmd := sandboxCmd(s.Dir, s.in.Sendmail, "-C", s.CF, "-bD", "-q1m")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting Sendmail: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range []string{s.Addr, s.BypassAddr} {
		for {
			if s.exited() {
				b, _ := os.ReadFile(filepath.Join(s.Dir, "daemon.out"))
				s.t.Fatalf("Sendmail exited at start: %s\n%s\n%s", s.cmd.ProcessState, b, harness.Tail(s.Log(), 30))
			}
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("Sendmail did not listen on %s within 20s:\n%s", addr, harness.Tail(s.Log(), 30))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// By now the process is Sendmail in its own namespace.
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", s.cmd.Process.Pid))
	if own, _ := os.Readlink("/proc/self/ns/mnt"); err == nil && ns != own {
		s.ns = ns
	}
}

func (s *Sendmail) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Stop ends the daemon (SIGTERM, then SIGKILL) and every process left in
// its namespace: deliveries and queue runs Sendmail forked into sessions
// of their own. Safe to call twice.
func (s *Sendmail) Stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	if s.cmd != nil {
		s.stopDaemon()
	}
	if s.logConn != nil {
		// Let the last datagrams land, then stop reading.
		time.Sleep(50 * time.Millisecond)
		s.logConn.Close()
		<-s.logDone
	}
}

func (s *Sendmail) stopDaemon() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	if s.ns != "" {
		deadline := time.Now().Add(5 * time.Second)
		for pids := s.nsProcesses(); len(pids) > 0 && time.Now().Before(deadline); pids = s.nsProcesses() {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// nsProcesses lists the live processes in the daemon's mount namespace.
func (s *Sendmail) nsProcesses() []int {
	return harness.Processes(func(pid int) bool {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		return err == nil && ns == s.ns
	})
}

// run runs a Sendmail program (sendmail -C submit.cf ..., the MSP) in the
// daemon's namespaces (its host name, hosts file and /dev/log), and returns
// its combined output and exit code.
func (s *Sendmail) run(stdin []byte, args ...string) (string, int) {
	s.t.Helper()
	if s.exited() {
		s.t.Fatal("Sendmail is not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := append([]string{"--target", strconv.Itoa(s.cmd.Process.Pid), "--mount", "--uts", "--", s.in.Sendmail}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", all...)
	cmd.Dir = s.Dir
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever it left
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		s.t.Fatalf("sendmail %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// Submit hands msg to the MSP as a local program would:
// sendmail -i -f FROM -- RCPTS. The MSP relays it to the MTA over SMTP at
// once; if the MTA tempfails, the message stays in the client queue. It
// returns sendmail's exit code (0: accepted, delivered or queued).
func (s *Sendmail) Submit(from string, rcpts []string, msg []byte) (string, int) {
	s.t.Helper()
	return s.run(msg, append([]string{"-C", s.SubmitCF, "-i", "-f", from, "--"}, rcpts...)...)
}

// RunClientQueue runs the MSP's queue once (sendmail -Ac -q, here with
// -C submit.cf), as Debian's client queue runner does every 30 minutes.
func (s *Sendmail) RunClientQueue() string {
	s.t.Helper()
	out, code := s.run(nil, "-C", s.SubmitCF, "-q", "-v")
	if code != 0 {
		s.t.Fatalf("sendmail -q (client queue): exit %d\n%s", code, out)
	}
	return out
}

// ClientQueue and Queue list the queue files (qf*) of the MSP and the MTA:
// one per message waiting.
func (s *Sendmail) ClientQueue() []string { return qfFiles(s.ClientQueueDir) }
func (s *Sendmail) Queue() []string       { return qfFiles(s.QueueDir) }

func qfFiles(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "qf") {
			out = append(out, e.Name())
		}
	}
	return out
}

// Log is the mail log so far.
func (s *Sendmail) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	b, _ := os.ReadFile(s.LogFile)
	return string(b)
}

// LogLines returns the mail log lines containing every one of subs.
func (s *Sendmail) LogLines(subs ...string) []string { return harness.LinesWith(s.Log(), subs...) }

// WaitLog waits until a mail log line contains every one of subs and
// returns the first such line.
func (s *Sendmail) WaitLog(t testing.TB, timeout time.Duration, subs ...string) string {
	t.Helper()
	var line string
	harness.Eventually(t, timeout, fmt.Sprintf("a Sendmail log line with %q", subs), func() bool {
		if l := s.LogLines(subs...); len(l) > 0 {
			line = l[0]
			return true
		}
		return false
	})
	return line
}

var acceptedAs = regexp.MustCompile(`250 2\.0\.0 (\w+) Message accepted for delivery`)

// queueID is Sendmail's queue ID from "250 2.0.0 ID Message accepted for
// delivery" in a swaks transcript, "" if the message was not accepted.
func queueID(r harness.SwaksResult) string {
	if m := acceptedAs.FindStringSubmatch(r.Output); m != nil {
		return m[1]
	}
	return ""
}

// example returns a file of examples/sendmail.
func example(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.ModuleRoot(), "examples", "sendmail", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// exampleMC is examples/sendmail/smsmilter.mc with the milter's address
// (S=inet:8890@127.0.0.1 there) set to smsmilter's port, so that the suite
// runs the very lines the documentation gives.
func exampleMC(t testing.TB, milterPort int) string {
	t.Helper()
	mc := example(t, "smsmilter.mc")
	const addr = "S=inet:8890@127.0.0.1,"
	if strings.Count(mc, addr) != 1 {
		t.Fatalf("examples/sendmail/smsmilter.mc: want one %q", addr)
	}
	return strings.Replace(mc, addr, fmt.Sprintf("S=inet:%d@127.0.0.1,", milterPort), 1)
}
