package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

// BenchmarkPostfix measures mail throughput through a private Postfix with
// Postfix's own smtp-source and smtp-sink, in three modes measured in the
// same run, interleaved, so that they can be compared as ratios:
//
//	postfix  Postfix alone (no milter)
//	pass     smsmilter attached, no SMS recipient (mail relayed to the sink)
//	sms      smsmilter attached, one SMS recipient per mail (outbox
//	         transport; the mail is consumed, the SMS written as JSON lines)
//
// Each run sends SMSMILTER_BENCH_MESSAGES mails (default 2000) of
// SMSMILTER_BENCH_SIZE bytes (1024) over SMSMILTER_BENCH_SESSIONS parallel
// sessions (20), and is timed until the last mail is at the sink (or the
// last SMS in the outbox), not until smtp-source exits. Each mode runs
// SMSMILTER_BENCH_ROUNDS times (3); the medians are reported. Run it with
// bench/postfix/run.sh; the figures are in bench/README.md.
func BenchmarkPostfix(b *testing.B) {
	messages := envInt("SMSMILTER_BENCH_MESSAGES", 2000)
	rounds := envInt("SMSMILTER_BENCH_ROUNDS", 3)
	sessions := envInt("SMSMILTER_BENCH_SESSIONS", 20)
	size := envInt("SMSMILTER_BENCH_SIZE", 1024)
	source := testutil.NeedCmd(b, "smtp-source")
	harness.NeedRoot(b)

	// A DNS server that knows nothing: the ip rule needs no lookup, and
	// the query count shows that none was made.
	dns := dnstest.NewServer(b)
	sink := harness.StartSink(b)
	sm := harness.NewSmsmilter(b)
	pf := harness.StartPostfix(b, harness.PostfixOptions{
		RelayTo: sink.Addr,
		MainCF:  harness.Example(b, "main.cf", sm.MilterAddr),
	})
	outbox := filepath.Join(sm.Dir, "outbox.jsonl")
	sm.Configure(harness.Config{
		"log":        map[string]any{"level": "warn"},
		"dns":        map[string]any{"resolver": dns.Addr},
		"mail":       map[string]any{"smtp": pf.Addr, "from": "smsmilter@mx.e2e.test"},
		"sms":        map[string]any{"max_parts": 8}, // 1024 bytes of smtp-source text: 7 parts
		"transports": map[string]any{"outbox": map[string]any{"plugin": "outbox", "tps": 100000, "settings": map[string]any{"path": outbox}}},
	})
	sm.MustCLI("user", "add", "bench", "--sender-id", "BENCH")
	sm.MustCLI("ip", "add", "127.0.0.1/32", "--user", "bench")
	sm.Start()
	milters := pf.Get("smtpd_milters")
	if v := os.Getenv("SMSMILTER_BENCH_POSTCONF"); v != "" {
		for _, kv := range strings.Split(v, ";") {
			pf.Postconf(kv)
		}
		pf.Reload()
	}

	// The floor any milter costs: a minimal go-milter program that, like
	// smsmilter with no SMS recipient, accepts at the first header.
	noop := startMinimalMilter(b)
	noopMilters := strings.ReplaceAll(milters, sm.MilterAddr, noop)

	type mode struct {
		name    string
		milters string // smtpd_milters for the run
		rcpt    string
		done    func() int // messages arrived so far
	}
	lines := &lineCounter{path: outbox}
	modes := []mode{
		{"postfix", "", dave, sink.Count},
		{"milter0", noopMilters, dave, sink.Count},
		{"pass", milters, dave, sink.Count},
		{"sms", milters, "+447400123456@" + domain, lines.count},
	}
	if v := os.Getenv("SMSMILTER_BENCH_MODES"); v != "" {
		var keep []mode
		for _, m := range modes {
			if strings.Contains(","+v+",", ","+m.name+",") {
				keep = append(keep, m)
			}
		}
		modes = keep
	}
	current := milters
	setMilters := func(v string) {
		if v == current {
			return
		}
		pf.Postconf("smtpd_milters = " + v)
		pf.Reload()
		time.Sleep(time.Second) // old smtpd processes finish and exit
		current = v
	}
	smsMessages := envInt("SMSMILTER_BENCH_SMS_MESSAGES", messages)
	b.Logf("%d messages of %d bytes per run (%d in sms mode), %d sessions, %d rounds; Postfix in_flow_delay = %s",
		messages, size, smsMessages, sessions, rounds, pf.Get("in_flow_delay"))
	run := func(m mode, n int) result {
		b.Helper()
		setMilters(m.milters)
		sink.Clear()
		start := m.done()
		eom0 := histogram(b, sm)
		cpuSM, cpuPF, cpuSink := sm.CPU(), pf.CPU(), sink.CPU()
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, source, "-l", strconv.Itoa(size), "-m", strconv.Itoa(n), "-s", strconv.Itoa(sessions),
			"-f", alice, "-t", m.rcpt, pf.Addr)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			b.Fatalf("smtp-source: %v\n%s", err, out.String())
		}
		sourceDone := time.Since(t0)
		deadline := time.Now().Add(5 * time.Minute)
		for m.done()-start < n {
			if time.Now().After(deadline) {
				b.Fatalf("%s: only %d of %d messages arrived\nsmtp-source said: %s", m.name, m.done()-start, n, out.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(t0)
		r := result{mode: m.name, n: n, elapsed: elapsed, source: sourceDone,
			cpuSM: sm.CPU() - cpuSM, cpuPF: pf.CPU() - cpuPF, cpuSink: sink.CPU() - cpuSink}
		r.eom = histogram(b, sm).minus(eom0)
		pf.WaitQueueEmpty(time.Minute)
		return r
	}

	for i := 0; i < b.N; i++ {
		all := map[string][]result{}
		for r := 0; r < rounds; r++ {
			for _, m := range modes {
				n := messages
				if m.name == "sms" {
					n = smsMessages
				}
				run(m, min(200, n)) // warm up: processes started, caches full
				res := run(m, n)
				all[m.name] = append(all[m.name], res)
				b.Logf("round %d %-7s %s", r+1, m.name, res)
			}
		}
		base := median(all["postfix"])
		for _, m := range modes {
			med := median(all[m.name])
			ratio := med / base
			b.Logf("%-7s median %7.1f msg/s  ratio to Postfix alone %.3f", m.name, med, ratio)
			if m.name != "postfix" {
				b.ReportMetric(ratio, m.name+"/postfix")
			}
			b.ReportMetric(med, m.name+"_msg/s")
		}
	}
	b.Logf("DNS queries made by smsmilter: %d", dns.TotalQueries())
	b.ReportMetric(0, "ns/op") // the figures above are what counts
}

// startMinimalMilter serves a milter that continues until the first
// header and accepts there, on a loopback port; it returns its address in
// smtpd_milters form.
func startMinimalMilter(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return acceptAtHeader{} },
		Protocol:  gomilter.OptNoUnknown,
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "inet:" + ln.Addr().String()
}

type acceptAtHeader struct{ gomilter.NoOpMilter }

func (acceptAtHeader) Header(string, string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespAccept, nil
}

type result struct {
	mode                  string
	n                     int
	elapsed, source       time.Duration
	cpuSM, cpuPF, cpuSink time.Duration
	eom                   eomHist
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r result) String() string {
	per := func(d time.Duration) string { return fmt.Sprintf("%4.0fµs", float64(d.Microseconds())/float64(r.n)) }
	s := fmt.Sprintf("%6d msgs in %6.2fs = %7.1f msg/s (smtp-source done at %.2fs); CPU per msg: Postfix %s, smsmilter %s, smtp-sink %s",
		r.n, r.elapsed.Seconds(), r.rate(), r.source.Seconds(), per(r.cpuPF), per(r.cpuSM), per(r.cpuSink))
	if r.eom.count > 0 {
		s += fmt.Sprintf("; EOM mean %.2fms p99 <= %s", 1000*r.eom.sum/r.eom.count, r.eom.quantile(0.99))
	}
	return s
}

func median(rs []result) float64 {
	if len(rs) == 0 {
		return math.NaN()
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = r.rate()
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// eomHist is smsmilter_eom_seconds as /metrics shows it.
type eomHist struct {
	sum, count float64
	buckets    map[float64]float64 // le -> cumulative count
}

func histogram(b *testing.B, sm *harness.Smsmilter) eomHist {
	code, body := sm.HTTPGet("/metrics")
	if code != 200 {
		b.Fatalf("/metrics: %d", code)
	}
	h := eomHist{buckets: map[float64]float64{}}
	for _, line := range strings.Split(body, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case f[0] == "smsmilter_eom_seconds_sum":
			h.sum = v
		case f[0] == "smsmilter_eom_seconds_count":
			h.count = v
		case strings.HasPrefix(f[0], `smsmilter_eom_seconds_bucket{le="`):
			le := strings.TrimSuffix(strings.TrimPrefix(f[0], `smsmilter_eom_seconds_bucket{le="`), `"}`)
			x, err := strconv.ParseFloat(le, 64)
			if le == "+Inf" {
				x, err = math.Inf(1), nil
			}
			if err == nil {
				h.buckets[x] = v
			}
		}
	}
	return h
}

func (h eomHist) minus(o eomHist) eomHist {
	d := eomHist{sum: h.sum - o.sum, count: h.count - o.count, buckets: map[float64]float64{}}
	for le, v := range h.buckets {
		d.buckets[le] = v - o.buckets[le]
	}
	return d
}

// quantile is the upper bound of the bucket holding quantile q.
func (h eomHist) quantile(q float64) string {
	les := make([]float64, 0, len(h.buckets))
	for le := range h.buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	for _, le := range les {
		if h.buckets[le] >= q*h.count {
			if math.IsInf(le, 1) {
				return "+Inf"
			}
			return fmt.Sprintf("%.1fms", le*1000)
		}
	}
	return "?"
}

// lineCounter counts the lines of a growing file without rereading it.
type lineCounter struct {
	path  string
	off   int64
	lines int
}

func (c *lineCounter) count() int {
	f, err := os.Open(c.path)
	if err != nil {
		return c.lines
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for {
		n, err := f.ReadAt(buf, c.off)
		// Count complete lines only; a partial one is read again.
		chunk := buf[:n]
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			c.lines += bytes.Count(chunk[:i+1], []byte{'\n'})
			c.off += int64(i + 1)
		}
		if err != nil || n < len(buf) {
			return c.lines
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
