package smpp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/linxGnu/gosmpp"
	"github.com/linxGnu/gosmpp/pdu"

	"github.com/smsmilter/smsmilter/internal/testpeer/smpppeer"
	"github.com/smsmilter/smsmilter/internal/testutil"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// BenchmarkSend measures submit_sm/s from Send through the transport to the
// node-smpp peer (quiet, no receipts) with window 1, 10 and 50, and the
// latency of one Send (p50, p99). Each window size first runs two
// baselines against the same peer with the same window: a raw node-smpp
// client (bench/smpp/blast.js; x-baseline is our rate over its rate) and a
// bare gosmpp session without this package's logic (x-raw-gosmpp). A ratio
// near 1 against the faster baseline means the peer (or gosmpp), not our
// code, is the limit; peer-cpu near 1 means node is saturated.
//
//	go test -run '^$' -bench BenchmarkSend -benchtime 20000x ./transports/smpp/
func BenchmarkSend(b *testing.B) {
	node := testutil.NeedCmd(b, "node")
	p := smpppeer.Start(b, smpppeer.Options{Quiet: true, Receipts: "off"})
	blast, err := filepath.Abs(filepath.Join("..", "..", "bench", "smpp", "blast.js"))
	if err != nil {
		b.Fatal(err)
	}
	for _, w := range []int{1, 10, 50} {
		base := baseline(b, node, blast, p, w)
		raw := rawGosmpp(b, p, w, 20000)
		b.Run(fmt.Sprintf("window=%d", w), func(b *testing.B) {
			tr := newTransport(nil)
			err := tr.Configure(context.Background(), sdk.Env{Name: "bench"}, map[string]any{
				"address": p.Addr(), "system_id": "smsmilter", "password": "secret",
				"window": w, "registered_delivery": false})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			msg := sdk.Message{To: "+447400123456", From: "ACME", Text: "Benchmark message", Encoding: "gsm7", Parts: 1}
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			peerCPU0, goCPU0 := procCPU(p.Pid()), selfCPU()
			b.ResetTimer()
			begin := time.Now()
			// As many senders as the window: it stays full, and a Send's
			// latency is its own round trip, not time queued for a slot.
			for range w {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						t0 := time.Now()
						if _, err := tr.Send(context.Background(), msg); err != nil {
							b.Error(err)
							return
						}
						lat[i] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(begin)
			b.StopTimer()
			peerCPU, goCPU := procCPU(p.Pid())-peerCPU0, selfCPU()-goCPU0
			rate := float64(b.N) / elapsed.Seconds()
			slices.Sort(lat)
			b.ReportMetric(rate, "submit/s")
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
			b.ReportMetric(base.Rate, "baseline-submit/s")
			b.ReportMetric(rate/base.Rate, "x-baseline")
			b.ReportMetric(rate/raw, "x-raw-gosmpp")
			// CPU used per second of wall time (1 = one core busy). The
			// peer is single-threaded node: near 1, it is the limit.
			if peerCPU >= 0 {
				b.ReportMetric(peerCPU.Seconds()/elapsed.Seconds(), "peer-cpu")
			}
			b.ReportMetric(goCPU.Seconds()/elapsed.Seconds(), "go-cpu")
		})
	}
}

// rawGosmpp is the same load through a bare gosmpp session: bind, submit
// with a semaphore as the window, count submit_sm_resp. It returns submit/s.
func rawGosmpp(b *testing.B, p *smpppeer.Peer, w, count int) float64 {
	b.Helper()
	slots := make(chan struct{}, w)
	done := make(chan struct{})
	var answered atomic.Int64
	settings := gosmpp.Settings{
		ReadTimeout: 30 * time.Second, WriteTimeout: 10 * time.Second,
		OnPDU: func(pp pdu.PDU, _ bool) {
			if _, ok := pp.(*pdu.SubmitSMResp); ok {
				<-slots
				if answered.Add(1) == int64(count) {
					close(done)
				}
			}
		},
	}
	auth := gosmpp.Auth{SMSC: p.Addr(), SystemID: "smsmilter", Password: "secret"}
	sess, err := gosmpp.NewSession(gosmpp.TRXConnector(gosmpp.NonTLSDialer, auth), settings, 0)
	if err != nil {
		b.Fatalf("raw gosmpp bind: %v", err)
	}
	defer sess.Close()
	src, _ := sourceAddress("ACME")
	dst, _ := destAddress("+447400123456")
	enc, _, _ := encodeText("Benchmark message", "gsm7")
	tr := &Transport{}
	begin := time.Now()
	for range count {
		slots <- struct{}{}
		sm := tr.newSubmitSM(submitSpec{src: src, dst: dst, coding: enc.coding, ud: enc.parts[0]})
		if err := sess.Transceiver().Submit(sm); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("raw gosmpp: %d of %d answered", answered.Load(), count)
	}
	rate := float64(count) / time.Since(begin).Seconds()
	b.Logf("baseline, bare gosmpp session, window %d: %.0f submit/s", w, rate)
	return rate
}

type blastResult struct {
	Count   int     `json:"count"`
	Failed  int     `json:"failed"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
}

// baseline runs blast.js with window w against the peer.
func baseline(b *testing.B, node, blast string, p *smpppeer.Peer, w int) blastResult {
	b.Helper()
	count := 20000
	if w == 1 {
		count = 5000
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, blast, "--port", strconv.Itoa(p.Port()),
		"--count", strconv.Itoa(count), "--window", strconv.Itoa(w)).Output()
	if err != nil {
		b.Fatalf("blast.js: %v", err)
	}
	var r blastResult
	if err := json.Unmarshal(out, &r); err != nil || r.Rate == 0 {
		b.Fatalf("blast.js output %q: %v", out, err)
	}
	b.Logf("baseline, raw node-smpp client, window %d: %.0f submit/s, p50 %.2fms, p99 %.2fms (%d submits)", w, r.Rate, r.P50, r.P99, r.Count)
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// procCPU is the user+system CPU time of process pid, from /proc (Linux);
// -1 where that cannot be read.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
