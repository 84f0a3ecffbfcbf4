package dispatch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/pluginhost"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/sqlite"
	"github.com/smsmilter/smsmilter/internal/testpeer/smpppeer"
	"github.com/smsmilter/smsmilter/internal/testutil"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// realSetup runs the dispatcher over a real store and a real smpp plugin
// process talking to the node-smpp peer.
type realSetup struct {
	st     *sqlite.Store
	plugin *pluginhost.Plugin
	peer   *smpppeer.Peer
	d      *Dispatcher
	cancel context.CancelFunc
	done   chan struct{}
}

func startReal(tb testing.TB, window int, quiet bool) *realSetup {
	tb.Helper()
	bin := testutil.Smsmilter(tb) // the built-in plugins are the binary re-executed as `smsmilter plugin NAME`
	peer := smpppeer.Start(tb, smpppeer.Options{Receipts: "off", Quiet: quiet})
	st, err := sqlite.OpenDir(context.Background(), tb.TempDir(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	p, err := pluginhost.Start(context.Background(), pluginhost.Options{
		Name: "smsc", Plugin: "smpp", Self: bin,
		Settings:   map[string]any{"address": peer.Addr(), "system_id": "smsmilter", "password": "secret", "window": window},
		Env:        sdk.Env{Name: "smsc", StateDir: tb.TempDir()},
		MinBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	cfg := config.Defaults()
	cfg.Transports = map[string]config.Transport{"smsc": {Plugin: "smpp", TPS: 1e6, Settings: map[string]any{"window": window}}}
	cfg.Routes = []config.Route{{Transports: []string{"smsc"}}}
	r := &realSetup{st: st, plugin: p, peer: peer, done: make(chan struct{})}
	r.d = New(Options{
		Store:       st,
		Transport:   func(string) (Sender, bool) { return p, true },
		Config:      func() *config.Config { return cfg },
		Poll:        20 * time.Millisecond,
		SendTimeout: 10 * time.Second,
		// Retries come quickly in tests; Backoff itself is tested apart.
		Backoff: func(int) time.Duration { return 100 * time.Millisecond },
	})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.d.Run(ctx); close(r.done) }()
	tb.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *realSetup) enqueue(tb testing.TB, n int) { r.enqueueFrom(tb, 0, n) }

// enqueueFrom queues n SMS to distinct numbers, as concurrent messages
// would (the store groups their commits).
func (r *realSetup) enqueueFrom(tb testing.TB, first, n int) {
	tb.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := first; i < first+n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			to := fmt.Sprintf("+4474%08d", i)
			_, err := r.st.Enqueue(ctx, []store.Job{{DedupeKey: "m|" + to, User: "ops", SenderID: "ACME", To: to, Text: "Load test " + strconv.Itoa(i), Encoding: "gsm7", Parts: 1, Created: time.Now()}}, 0)
			if err != nil {
				tb.Error(err)
			}
		}(i)
	}
	wg.Wait()
	r.d.Wake()
}

func (r *realSetup) waitSent(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d, err := r.st.Depth(context.Background())
		if err == nil && d[store.JobSent] >= n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("only %v of %d jobs sent after %s", d, n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pluginPIDs finds the running `plugin smpp` processes of the binary.
func pluginPIDs(bin string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmd), "\x00")
		if len(args) >= 3 && args[0] == bin && args[1] == "plugin" && args[2] == "smpp" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestPluginKilledDuringSends: kill -9 of the smpp plugin while the
// dispatcher pushes 300 SMS. Every SMS still reaches the SMSC; only those
// in flight at the kill (at most the window) may go twice (DESIGN.md §13).
func TestPluginKilledDuringSends(t *testing.T) {
	const total, window = 300, 10
	r := startReal(t, window, false)
	r.enqueue(t, total)
	deadline := time.Now().Add(30 * time.Second)
	for len(r.peer.Submits()) < total/3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d submits before the kill", len(r.peer.Submits()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	pids := pluginPIDs(testutil.Smsmilter(t))
	if len(pids) != 1 {
		t.Fatalf("plugin processes: %v", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.waitSent(t, total, 90*time.Second)
	seen := map[string]int{}
	for _, s := range r.peer.Accepted() {
		seen[s.DestAddr]++
	}
	dups := 0
	for i := 0; i < total; i++ {
		n := seen[fmt.Sprintf("4474%08d", i)]
		if n == 0 {
			t.Errorf("+4474%08d never reached the SMSC", i)
		}
		dups += max(0, n-1)
	}
	if dups > window {
		t.Errorf("%d SMS submitted twice; at most the window (%d) were in flight at the kill", dups, window)
	}
	after := pluginPIDs(testutil.Smsmilter(t))
	if len(after) != 1 || after[0] == pids[0] {
		t.Errorf("plugin not restarted: before %v, after %v", pids, after)
	}
	t.Logf("%d duplicates after the kill", dups)
}

// BenchmarkQueueToSMPP measures SMS per second from the queue through the
// dispatcher, the smpp plugin process and the link to the node-smpp peer,
// and the queue-to-submit latency (enqueue to the SMSC's submit_sm_resp
// recorded by MarkSent). Rerun: go test -run '^$' -bench QueueToSMPP
// -benchtime 3x ./internal/dispatch/ (see bench/README.md).
func BenchmarkQueueToSMPP(b *testing.B) {
	for _, window := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			const n = 3000
			r := startReal(b, window, true)
			var elapsed time.Duration
			for it := 0; it < b.N; it++ {
				start := time.Now()
				r.enqueueFrom(b, it*n, n)
				r.waitSent(b, (it+1)*n, 5*time.Minute)
				elapsed += time.Since(start)
			}
			jobs, _ := r.st.ListJobs(context.Background(), store.JobSent, 0)
			lat := make([]time.Duration, 0, len(jobs))
			for _, j := range jobs {
				lat = append(lat, j.Updated.Sub(j.Created))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "sms/s")
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
		})
	}
}
