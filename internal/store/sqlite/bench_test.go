package sqlite

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
)

// Enqueue throughput, one job per message, as the milter does for a mail
// to one number. Sub-benchmarks compare group commit with baselines
// measured in the same run:
//   - nobatch: one transaction (one fsync) per message, as without group
//     commit;
//   - nosync: no group commit and synchronous=OFF (no fsync at all): the
//     ceiling the disk is not part of.

var benchSeq atomic.Int64

func benchJob() []store.Job {
	n := benchSeq.Add(1)
	return []store.Job{{
		DedupeKey: fmt.Sprintf("<%d@bench.example>|+447400123456", n), MessageID: fmt.Sprintf("<%d@bench.example>", n),
		Sender: "alice@example.com", User: "ops", SenderID: "ACME", To: "+447400123456",
		Text: "The server room temperature is above 30°C.", Encoding: "ucs2", Parts: 1,
	}}
}

var benchVariants = []struct {
	name string
	opt  func() options
}{
	{"group", defaultOptions},
	{"nobatch", func() options { o := defaultOptions(); o.maxBatch = 1; return o }},
	{"nosync", func() options { o := defaultOptions(); o.maxBatch = 1; o.synchronous = "OFF"; return o }},
}

func reportRate(b *testing.B, s *Store, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
	if st := s.Stats(); st.Commits > 0 {
		b.ReportMetric(float64(st.Writes)/float64(st.Commits), "msg/commit")
	}
}

func BenchmarkEnqueueSerial(b *testing.B) {
	for _, v := range benchVariants {
		b.Run(v.name, func(b *testing.B) {
			s := openWith(b, filepath.Join(b.TempDir(), FileName), v.opt())
			ctx := b.Context()
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				if _, err := s.Enqueue(ctx, benchJob(), 10*time.Minute); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, s, start)
		})
	}
}

// BenchmarkEnqueueParallel runs 64 goroutines (b.SetParallelism scales
// GOMAXPROCS), like 64 milter sessions at end of message at once.
func BenchmarkEnqueueParallel(b *testing.B) {
	for _, v := range benchVariants {
		b.Run(v.name, func(b *testing.B) {
			s := openWith(b, filepath.Join(b.TempDir(), FileName), v.opt())
			ctx := b.Context()
			b.SetParallelism(max(1, 64/runtimeProcs()))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Enqueue(ctx, benchJob(), 10*time.Minute); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b, s, start)
		})
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkFindRule is the milter's per-message registry lookup.
func BenchmarkFindRule(b *testing.B) {
	s := openWith(b, filepath.Join(b.TempDir(), FileName), defaultOptions())
	ctx := b.Context()
	if err := s.AddUser(ctx, store.User{Name: "ops", SenderID: "ACME"}); err != nil {
		b.Fatal(err)
	}
	var rules []store.Rule
	for i := range 1000 {
		rules = append(rules, store.Rule{Kind: store.KindAddress, Pattern: fmt.Sprintf("u%d@example.com", i), User: "ops"})
	}
	if err := s.AddRules(ctx, rules); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.FindRule(ctx, store.KindAddress, fmt.Sprintf("u%d@example.com", i%1000)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
