// Package daemon is `smsmilter serve`: it wires the store, the milter
// listener, the transport plugins, the dispatcher, the reply router, the
// POP3 plugin, the outgoing mail spool and the HTTP endpoints together,
// reloads the config on SIGHUP and drains on SIGTERM (DESIGN.md §9, §11,
// §13).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/dispatch"
	"github.com/smsmilter/smsmilter/internal/mailer"
	"github.com/smsmilter/smsmilter/internal/pluginhost"
	"github.com/smsmilter/smsmilter/internal/replies"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/sqlite"
	"github.com/smsmilter/smsmilter/milter"
	pop3plugin "github.com/smsmilter/smsmilter/plugins/pop3"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// Options says how to run the daemon.
type Options struct {
	ConfigPath string
	// Self is the smsmilter binary, re-executed for built-in plugins.
	Self string
	// Stderr receives the log (default os.Stderr).
	Stderr io.Writer
	// Ready, if set, is called once every listener is open (tests).
	Ready func(d *Daemon)
}

// Daemon is a running smsmilter.
type Daemon struct {
	o     Options
	cfg   atomic.Pointer[config.Config]
	log   *slog.Logger
	store store.Store

	handler    *milter.Handler
	server     *milter.Server
	milterLn   net.Listener
	httpLn     net.Listener
	spool      *mailer.Spool
	dispatcher *dispatch.Dispatcher
	router     *replies.Router

	http     *http.Server
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	mu         sync.Mutex
	transports map[string]*pluginhost.Plugin
	pop3       *pop3Deliverer
}

// Exit codes: the same as the CLI's (DESIGN.md §10).
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

// Run runs the daemon until ctx ends (SIGTERM), then drains and returns an
// exit code.
func Run(ctx context.Context, o Options) int {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	cfg, err := config.Load(o.ConfigPath)
	if err != nil {
		fmt.Fprintln(o.Stderr, err)
		return exitConfig
	}
	d := &Daemon{o: o, transports: map[string]*pluginhost.Plugin{}}
	d.cfg.Store(cfg)
	d.log = newLogger(o.Stderr, cfg.Log)
	if err := d.start(ctx); err != nil {
		d.log.Error("smsmilter cannot start", "err", err)
		d.stop()
		return exitFailed
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if o.Ready != nil {
		o.Ready(d)
	}
	for {
		select {
		case <-hup:
			d.Reload()
		case <-ctx.Done():
			d.log.Info("shutting down: draining milter sessions", "drain_timeout", d.config().Milter.DrainTimeout.String())
			d.stop()
			d.log.Info("stopped")
			return exitOK
		}
	}
}

func (d *Daemon) config() *config.Config { return d.cfg.Load() }

// Config returns the config in force.
func (d *Daemon) Config() *config.Config { return d.config() }

// MilterAddr is the milter listener's address.
func (d *Daemon) MilterAddr() net.Addr { return d.milterLn.Addr() }

// HTTPAddr is the HTTP listener's address, nil when off.
func (d *Daemon) HTTPAddr() net.Addr {
	if d.httpLn == nil {
		return nil
	}
	return d.httpLn.Addr()
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(c.Level))
	o := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

func (d *Daemon) start(ctx context.Context) error {
	cfg := d.config()
	st, err := sqlite.OpenDir(ctx, cfg.StateDir, d.log)
	if err != nil {
		return fmt.Errorf("open the store in %s: %w", cfg.StateDir, err)
	}
	d.store = st
	// Jobs and mail a previous run had in hand when it died go out now,
	// not when their leases run out.
	if n, err := st.ReleaseLeases(ctx, time.Now()); err != nil {
		return err
	} else if n > 0 {
		d.log.Info("resuming SMS and mail in flight when smsmilter last stopped", "count", n)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	metrics := milter.NewMetrics(reg)
	d.registerQueueGauge(reg)

	d.spool = mailer.NewSpool(st, func() string { return d.config().Mail.SMTP }, d.log.With("part", "mail"))
	d.router = replies.New(replies.Options{Store: st, Config: d.config, Mail: d.spool, Log: d.log.With("part", "replies")})
	d.dispatcher = dispatch.New(dispatch.Options{
		Store:     st,
		Transport: d.transport,
		Config:    d.config,
		Failed:    d.router.JobFailed,
		Sent:      d.router.JobSent,
		Log:       d.log.With("part", "dispatch"),
	})
	d.handler, err = milter.New(milter.Options{Config: cfg, Store: st, Mail: d.spool, Log: d.log.With("part", "milter"), Metrics: metrics, Queued: d.dispatcher.Wake})
	if err != nil {
		return err
	}

	network, addr, err := config.ParseListen(cfg.Milter.Listen)
	if err != nil {
		return err
	}
	if d.milterLn, err = milter.Listen(network, addr); err != nil {
		return fmt.Errorf("milter.listen %s: %w", cfg.Milter.Listen, err)
	}
	if cfg.HTTP.Listen != "" {
		if d.httpLn, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
		}
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.bgCancel = cancel
	d.goBG(func() { d.spool.Run(bg) })
	d.goBG(func() { d.dispatcher.Run(bg) })
	d.goBG(func() { d.purgeLoop(bg) })
	for _, name := range sortedNames(cfg.Transports) {
		d.goBG(func() { d.runTransport(bg, name, cfg.Transports[name]) })
	}
	if cfg.POP3.Enabled {
		d.pop3 = &pop3Deliverer{}
		d.router.SetPOP3(d.pop3)
		d.goBG(func() { d.runPOP3(bg) })
	}
	if d.httpLn != nil {
		d.http = &http.Server{Handler: d.httpHandler(reg), ReadHeaderTimeout: 10 * time.Second}
		go d.http.Serve(d.httpLn)
	}
	d.server = milter.NewServer(d.handler, d.log.With("part", "milter"))
	go d.server.Serve(d.milterLn)
	var names []string
	for _, n := range sortedNames(cfg.Transports) {
		names = append(names, n+"("+cfg.Transports[n].Plugin+")")
	}
	d.log.Info("smsmilter started", "milter", cfg.Milter.Listen, "http", cfg.HTTP.Listen, "state_dir", cfg.StateDir,
		"sms_domains", strings.Join(cfg.SMSDomains, ","), "transports", strings.Join(names, ","), "pop3", cfg.POP3.Enabled)
	return nil
}

func (d *Daemon) goBG(f func()) {
	d.bgWG.Add(1)
	go func() { defer d.bgWG.Done(); f() }()
}

// stop drains milter sessions, then stops background work and plugins.
func (d *Daemon) stop() {
	cfg := d.config()
	if d.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Milter.DrainTimeout)
		d.server.Shutdown(ctx)
		cancel()
	} else if d.milterLn != nil {
		d.milterLn.Close()
	}
	if d.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		d.http.Shutdown(ctx)
		cancel()
	} else if d.httpLn != nil {
		d.httpLn.Close()
	}
	if d.bgCancel != nil {
		d.bgCancel()
	}
	d.bgWG.Wait()
	d.mu.Lock()
	for name, p := range d.transports {
		if err := p.Close(); err != nil {
			d.log.Warn("transport plugin did not stop cleanly", "transport", name, "err", err)
		}
	}
	d.transports = map[string]*pluginhost.Plugin{}
	d.mu.Unlock()
	if d.pop3 != nil {
		d.pop3.close()
	}
	if d.store != nil {
		d.store.Close()
	}
}

func (d *Daemon) transport(name string) (dispatch.Sender, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.transports[name]
	if !ok {
		return nil, false
	}
	return p, true
}

// runTransport starts a transport plugin and keeps trying while it cannot
// start (a bad setting, an SMSC that refuses): the milter keeps accepting
// mail meanwhile and the jobs wait in the queue. Once started, the plugin
// host restarts a crashed plugin by itself.
func (d *Daemon) runTransport(ctx context.Context, name string, t config.Transport) {
	cfg := d.config()
	log := d.log.With("transport", name, "plugin", t.Plugin)
	stateDir := filepath.Join(cfg.StateDir, "plugins", name)
	os.MkdirAll(stateDir, 0o750)
	var p *pluginhost.Plugin
	started := startWithRetry(ctx, func() error {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		var err error
		p, err = pluginhost.Start(sctx, pluginhost.Options{
			Name: name, Plugin: t.Plugin, Self: d.o.Self, Settings: t.Settings,
			Env: sdk.Env{Name: name, StateDir: stateDir, DefaultRegion: cfg.Numbers.DefaultRegion},
			Log: log,
		})
		return err
	}, func(err error, wait time.Duration) {
		log.Error("transport cannot start; SMS for it wait in the queue", "err", err, "retry_in", wait.String())
		d.store.LogEvent(ctx, store.Event{Time: time.Now(), Kind: store.EventConfig, Message: fmt.Sprintf("transport %s cannot start: %v", name, err), Fields: map[string]string{"transport": name}})
	})
	if !started {
		return
	}
	d.mu.Lock()
	d.transports[name] = p
	d.mu.Unlock()
	log.Info("transport running")
	d.dispatcher.Wake()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-p.Events():
			if !ok {
				return
			}
			ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			switch {
			case ev.Incoming != nil:
				d.router.Incoming(ectx, name, *ev.Incoming)
			case ev.Report != nil:
				if err := d.router.Report(ectx, name, *ev.Report); errors.Is(err, store.ErrNotFound) {
					// A receipt can overtake the record of its own
					// submission (fast SMSCs): try again shortly.
					go d.retryReport(ctx, name, *ev.Report)
				}
			}
			cancel()
		}
	}
}

// retryReport applies a delivery report whose part was not recorded yet.
func (d *Daemon) retryReport(ctx context.Context, transport string, rep sdk.Report) {
	for _, wait := range []time.Duration{time.Second, 3 * time.Second, 10 * time.Second, 30 * time.Second} {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := d.router.Report(rctx, transport, rep)
		cancel()
		if !errors.Is(err, store.ErrNotFound) {
			return
		}
	}
	d.log.Info("delivery report for an SMS part smsmilter does not know; ignored", "transport", transport, "ref", rep.Ref, "state", rep.State)
}

// purgeLoop removes AutoCLIP records older than replies.autoclip_ttl and
// history older than retention, so the store does not grow without end.
func (d *Daemon) purgeLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		cfg := d.config()
		if n, err := d.store.PurgeSent(ctx, time.Now().Add(-cfg.Replies.AutoCLIPTTL)); err == nil && n > 0 {
			d.log.Info("expired AutoCLIP records removed", "count", n)
		}
		if cfg.Retention > 0 {
			if n, err := d.store.Purge(ctx, time.Now().Add(-cfg.Retention)); err != nil {
				d.log.Warn("cannot remove old history from the store", "err", err)
			} else if n > 0 {
				d.log.Info("history older than retention removed", "count", n, "retention", cfg.Retention.String())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Reload reads the config again and swaps it in only when all of it is
// good; a bad one is logged (daemon log and event log) and the old one
// keeps running (DESIGN.md §13).
func (d *Daemon) Reload() error {
	old := d.config()
	cfg, err := config.Load(d.o.ConfigPath)
	if err == nil {
		err = d.handler.Reload(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err != nil {
		d.log.Error("config reload failed; the old config keeps running", "config", d.o.ConfigPath, "err", err)
		d.store.LogEvent(ctx, store.Event{Time: time.Now(), Kind: store.EventConfig, Message: "config reload failed; the old config keeps running: " + oneLine(err.Error()), Fields: map[string]string{"config": d.o.ConfigPath}})
		return err
	}
	d.cfg.Store(cfg)
	msg := "config reloaded"
	var restart []string
	restart = append(restart, cfg.ListenChanged(old)...)
	if transportsChanged(old, cfg) {
		restart = append(restart, "transports")
	}
	if old.POP3.Enabled != cfg.POP3.Enabled || old.StateDir != cfg.StateDir {
		restart = append(restart, "pop3.enabled/state_dir")
	}
	if len(restart) > 0 {
		msg += "; these changes need a restart to take effect: " + strings.Join(restart, ", ")
		d.log.Warn(msg, "config", d.o.ConfigPath)
	} else {
		d.log.Info(msg, "config", d.o.ConfigPath)
	}
	d.store.LogEvent(ctx, store.Event{Time: time.Now(), Kind: store.EventConfig, Message: msg, Fields: map[string]string{"config": d.o.ConfigPath}})
	return nil
}

func transportsChanged(a, b *config.Config) bool {
	if len(a.Transports) != len(b.Transports) {
		return true
	}
	for n, t := range a.Transports {
		u, ok := b.Transports[n]
		if !ok || t.Plugin != u.Plugin || fmt.Sprint(t.Settings) != fmt.Sprint(u.Settings) {
			return true
		}
	}
	return false
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func sortedNames[T any](m map[string]T) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// registerQueueGauge exports the queue depth by state, read from the store
// at most once a second however often Prometheus scrapes.
func (d *Daemon) registerQueueGauge(reg prometheus.Registerer) {
	var mu sync.Mutex
	var last time.Time
	var cached map[string]int
	depth := func(state string) float64 {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) > time.Second {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if m, err := d.store.Depth(ctx); err == nil {
				cached, last = m, time.Now()
			}
			cancel()
		}
		return float64(cached[state])
	}
	for _, s := range []string{store.JobQueued, store.JobSending, store.JobSent, store.JobDelivered, store.JobFailed} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "smsmilter_queue_jobs", Help: "SMS jobs in the queue by state.", ConstLabels: prometheus.Labels{"state": s},
		}, func() float64 { return depth(s) }))
	}
}

func (d *Daemon) httpHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		var lines []string
		code := http.StatusOK
		if err := d.store.Ping(ctx); err != nil {
			code = http.StatusServiceUnavailable
			lines = append(lines, "store: unavailable: "+oneLine(err.Error()))
		} else {
			lines = append(lines, "store: ok")
		}
		if d.server.Draining() {
			code = http.StatusServiceUnavailable
			lines = append(lines, "milter: draining")
		} else {
			lines = append(lines, fmt.Sprintf("milter: ok (%d connections)", d.server.Active()))
		}
		// A transport that is down does not make smsmilter unhealthy: mail
		// is still accepted and its SMS wait in the queue. Say so anyway.
		for _, name := range sortedNames(d.config().Transports) {
			d.mu.Lock()
			p := d.transports[name]
			d.mu.Unlock()
			switch {
			case p == nil:
				lines = append(lines, "transport "+name+": not running")
			default:
				if err := p.Health(ctx); err != nil {
					lines = append(lines, "transport "+name+": down: "+oneLine(err.Error()))
				} else {
					lines = append(lines, "transport "+name+": ok")
				}
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		io.WriteString(w, strings.Join(lines, "\n")+"\n")
	})
	return mux
}

var errPOP3Down = errors.New("the POP3 plugin is not running")

// runPOP3 starts the POP3 plugin; its host client restarts it after a
// crash by itself. While it cannot start, replies for POP3 are logged as not
// delivered there (email delivery, if configured, still happens).
func (d *Daemon) runPOP3(ctx context.Context) {
	cfg := d.config()
	log := d.log.With("plugin", "pop3")
	stateDir := filepath.Join(cfg.StateDir, "pop3")
	os.MkdirAll(stateDir, 0o750)
	var c *pop3plugin.Client
	started := startWithRetry(ctx, func() error {
		var err error
		c, err = pop3plugin.Start(ctx, pop3plugin.Options{
			Path: d.o.Self,
			Args: []string{"--config", d.o.ConfigPath, "plugin", "pop3"},
			Config: pop3plugin.Config{
				Listen: cfg.POP3.Listen, TLSListen: cfg.POP3.TLSListen,
				TLSCert: cfg.POP3.TLSCert, TLSKey: cfg.POP3.TLSKey, StateDir: stateDir,
			},
			Log: log,
		})
		return err
	}, func(err error, wait time.Duration) {
		log.Error("POP3 plugin cannot start", "err", err, "retry_in", wait.String())
	})
	if !started {
		return
	}
	d.pop3.set(c)
	listen, tlsListen := c.Addrs()
	log.Info("POP3 plugin running", "listen", listen, "tls_listen", tlsListen)
}

// startWithRetry calls start until it succeeds, waiting 1s doubling to a
// minute between tries and reporting each failure; false when ctx ended
// first (the daemon is stopping).
func startWithRetry(ctx context.Context, start func() error, failed func(err error, wait time.Duration)) bool {
	wait := time.Second
	for {
		err := start()
		if err == nil {
			return true
		}
		failed(err, wait)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}
