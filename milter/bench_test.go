package milter

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/registry"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/sqlite"
)

// The benchmark runs the milter in a child process (this test binary,
// re-executed with benchServeEnv set) so that its peak RSS is the
// milter's alone, and drives it over loopback from here with go-milter's
// client, like an MTA with many SMTP sessions at once.
const (
	benchServeEnv = "SMSMILTER_BENCH_SERVE"      // state directory of the child
	benchConnsEnv = "SMSMILTER_BENCH_CONNS"      // client connections, default 64
	benchClientIP = "10.20.30.40"                // inside the benchmark's ip rule
	benchProfEnv  = "SMSMILTER_BENCH_CPUPROFILE" // file prefix: the child writes PREFIX-<pid>.pprof
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(benchServeEnv); dir != "" {
		if err := benchServe(dir); err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchServe runs a milter as the daemon does (sqlite store with group
// commit, a decision log line per message) until stdin closes.
func benchServe(dir string) error {
	ctx := context.Background()
	cfg := config.Defaults()
	cfg.SMSDomains = []string{"sms.test"}
	cfg.StateDir = dir
	cfg.Milter.MaxConnections = 1000
	cfg.DNS.Resolver = "127.0.0.1:9" // never asked: the ip rule needs no DNS
	logFile, err := os.Create(filepath.Join(dir, "milter.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	w := bufio.NewWriterSize(logFile, 64<<10)
	defer w.Flush()
	log := slog.New(slog.NewJSONHandler(&lockedWriter{w: w}, nil))
	st, err := sqlite.OpenDir(ctx, dir, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.AddUser(ctx, store.User{Name: "ops", SenderID: "ACME"}); err != nil {
		return err
	}
	r, err := registry.Rule(registry.RuleSpec{Kind: store.KindIP, Pattern: "10.0.0.0/8", User: "ops"})
	if err != nil {
		return err
	}
	if _, err := st.AddRule(ctx, r); err != nil {
		return err
	}
	h, err := New(Options{Config: cfg, Store: st, Log: log})
	if err != nil {
		return err
	}
	srv := NewServer(h, log)
	ln, err := Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if prefix := os.Getenv(benchProfEnv); prefix != "" {
		f, err := os.Create(fmt.Sprintf("%s-%d.pprof", prefix, os.Getpid()))
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	go srv.Serve(ln)
	fmt.Printf("LISTEN %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// benchChild is a running milter process.
type benchChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

func startBenchChild(b *testing.B) *benchChild {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), benchServeEnv+"="+b.TempDir())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &benchChild{cmd: cmd, stdin: stdin}
	b.Cleanup(c.stop)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("bench server did not start: %v", err)
	}
	c.addr = strings.TrimSpace(strings.TrimPrefix(line, "LISTEN "))
	return c
}

func (c *benchChild) stop() {
	if c.stdin != nil {
		c.stdin.Close()
		c.stdin = nil
		done := make(chan struct{})
		go func() { c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
		}
	}
}

// cpu is the child's user+system CPU time so far. Figures per message
// hold when other work shares the machine, where msg/s does not.
func (c *benchChild) cpu() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS is the child's VmHWM in MiB.
func (c *benchChild) peakRSS() float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// benchMessage is one transaction as an MTA sends it; it returns when the
// milter gave its final answer and checks that answer.
func benchMessage(s *gomilter.ClientSession, sms bool, seq int64) error {
	rcpt := "bob@elsewhere.test"
	want := gomilter.ActAccept
	if sms {
		rcpt = gbMobile + "@sms.test"
		want = gomilter.ActDiscard
	}
	qid := fmt.Sprintf("B%010X", seq)
	if err := s.Macros(gomilter.CodeMail, "{mail_addr}", "bench@bench.test"); err != nil {
		return err
	}
	if _, err := s.Mail("bench@bench.test", nil); err != nil {
		return err
	}
	if err := s.Macros(gomilter.CodeRcpt, "i", qid, "{rcpt_addr}", rcpt); err != nil {
		return err
	}
	if _, err := s.Rcpt(rcpt, nil); err != nil {
		return err
	}
	hdr := [][2]string{
		{"Received", " from client.bench.test (client.bench.test [10.20.30.40]) by mx.test (Postfix) with ESMTP id " + qid},
		{"From", " Bench <bench@bench.test>"},
		{"To", " " + rcpt},
		{"Subject", " load test"},
		{"Message-ID", fmt.Sprintf(" <%d.%d@bench.test>", time.Now().UnixNano(), seq)},
		{"Date", " Mon, 1 Dec 2025 10:00:00 +0000"},
		{"MIME-Version", " 1.0"},
		{"Content-Type", " text/plain; charset=utf-8"},
	}
	for _, f := range hdr {
		act, err := s.HeaderField(f[0], f[1])
		if err != nil {
			return err
		}
		if act.Code != gomilter.ActContinue {
			if act.Code != want || sms {
				return fmt.Errorf("header answered %q", act.Code)
			}
			return nil // passed: the MTA sends nothing more
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		return err
	}
	if _, err := s.BodyChunk([]byte("The nightly backup of db1 finished with 3 warnings; see the report.\r\n\r\n-- \r\nbackup robot\r\n")); err != nil {
		return err
	}
	if err := s.Macros(gomilter.CodeEOB, "i", qid); err != nil {
		return err
	}
	_, act, err := s.End()
	if err != nil {
		return err
	}
	if act.Code != want {
		return fmt.Errorf("end of message answered %s", actText(act))
	}
	return nil
}

// BenchmarkMilter measures milter transactions per second over loopback
// with many concurrent connections: pass is mail with no SMS recipient,
// sms mail to one number durably queued in the sqlite store. Reported: msg/s,
// p50 and p99 latency of the final answer, and the milter process's peak RSS.
func BenchmarkMilter(b *testing.B) {
	conns := 64
	if n, err := strconv.Atoi(os.Getenv(benchConnsEnv)); err == nil && n > 0 {
		conns = n
	}
	for _, sc := range []struct {
		name string
		sms  bool
	}{{"pass", false}, {"sms", true}} {
		b.Run(sc.name, func(b *testing.B) {
			child := startBenchChild(b)
			opts := clientOptions()
			sessions := make([]*gomilter.ClientSession, conns)
			for i := range sessions {
				s, err := gomilter.NewClientWithOptions("tcp", child.addr, opts).Session()
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				if _, err := s.Conn("client.bench.test", gomilter.FamilyInet, 25, benchClientIP); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Helo("client.bench.test"); err != nil {
					b.Fatal(err)
				}
				sessions[i] = s
			}
			var next atomic.Int64
			lat := make([][]time.Duration, conns)
			var wg sync.WaitGroup
			var failed atomic.Value
			b.ResetTimer()
			cpu0, self0 := child.cpu(), selfCPU()
			start := time.Now()
			for i, s := range sessions {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						n := next.Add(1)
						if n > int64(b.N) {
							return
						}
						t0 := time.Now()
						if err := benchMessage(s, sc.sms, n); err != nil {
							failed.Store(err)
							return
						}
						lat[i] = append(lat[i], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			cpu, self := child.cpu()-cpu0, selfCPU()-self0
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			all := slices.Concat(lat...)
			slices.Sort(all)
			pct := func(p float64) float64 {
				if len(all) == 0 {
					return 0
				}
				return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(child.peakRSS(), "peak-RSS-MiB")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "milter-CPU-µs/msg")
			b.ReportMetric(float64(self.Microseconds())/float64(b.N), "client-CPU-µs/msg")
			b.ReportMetric(0, "ns/op") // meaningless with concurrent sessions
		})
	}
}
