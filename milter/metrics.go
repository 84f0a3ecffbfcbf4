package milter

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the milter's Prometheus series (DESIGN.md §11).
type Metrics struct {
	messages       *prometheus.CounterVec // by outcome
	verdicts       *prometheus.CounterVec // by check and level
	rcptRejected   prometheus.Counter
	refusedConns   prometheus.Counter
	jobs           prometheus.Counter
	eomLatency     prometheus.Histogram
	connections    prometheus.Gauge
	protocolErrors prometheus.Counter
	timeouts       prometheus.Counter
}

// NewMetrics registers the milter's series on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smsmilter_messages_total",
			Help: "Messages seen by the milter, by outcome (passed, queued, refused, tempfail, too_big, verdict).",
		}, []string{"outcome"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smsmilter_verdicts_total",
			Help: "Authentication verdicts computed or believed, by check (dkim, spf, dmarc) and level (pass, gray, fail).",
		}, []string{"check", "level"}),
		rcptRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smsmilter_recipients_rejected_total",
			Help: "SMS recipients rejected at RCPT (not a mobile number, country not allowed, too many).",
		}),
		refusedConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smsmilter_connections_refused_total",
			Help: "MTA connections refused because milter.max_connections was reached.",
		}),
		jobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smsmilter_jobs_queued_total",
			Help: "SMS jobs committed to the queue.",
		}),
		eomLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "smsmilter_eom_seconds",
			Help:    "Time from end of message to the milter's answer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smsmilter_milter_connections",
			Help: "Open MTA connections.",
		}),
		protocolErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smsmilter_milter_protocol_errors_total",
			Help: "MTA connections closed because a command came out of order.",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smsmilter_milter_timeouts_total",
			Help: "MTA connections closed because a milter step passed milter.timeout.",
		}),
	}
	// Series that exist from the start: a dashboard or alert on
	// rate(smsmilter_messages_total{outcome="refused"}) must not see "no
	// data" before the first refusal.
	for _, o := range []string{"passed", "queued", "refused", "tempfail", "too_big", "verdict"} {
		m.messages.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.verdicts, m.rcptRejected, m.refusedConns, m.jobs, m.eomLatency,
			m.connections, m.protocolErrors, m.timeouts)
	}
	return m
}
