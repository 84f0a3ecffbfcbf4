// Package pluginhost runs SMS transport plugins and keeps them running.
//
// Each configured transport is its own process, spoken to over
// hashicorp/go-plugin's gRPC protocol (plugins/proto): the built-in ones by
// re-executing smsmilter as `smsmilter plugin NAME`, third-party ones from
// the absolute path in the config. go-plugin v1.8.0 does not restart a dead
// plugin, so a Plugin supervises its process: it notices an exit, a broken
// connection or event stream, and a hung plugin (a Health call or a Send
// that overruns its deadline), kills what is left, and starts a new process
// with exponential backoff, configured again and with its event stream
// reopened. Callers keep one *Plugin and one Events channel throughout.
//
// Sends in flight when a plugin dies fail with a temporary error; the
// dispatcher retries them (DESIGN.md §13: at least once).
package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/smsmilter/smsmilter/plugins/proto"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// Options says which plugin to run and how. Zero durations take the
// defaults given.
type Options struct {
	Name string // transport name from the config
	// Plugin is a built-in plugin name ("outbox", "smpp", "modem"), run as
	// `Self SelfArgs... plugin NAME`, or the absolute path of a third-party
	// plugin binary.
	Plugin string
	// Self is the smsmilter binary (os.Executable()); tests pass their own
	// test binary.
	Self string
	// SelfArgs go before "plugin NAME" when running Self (tests).
	SelfArgs []string
	// ExtraEnv is added to the plugin's environment (tests: the
	// helper-process switch). The plugin also inherits smsmilter's.
	ExtraEnv []string
	Settings map[string]any // the transport's `settings`, passed as JSON
	Env      sdk.Env
	// Log receives the host's and the plugin's messages; name the
	// transport in it (Log.With("transport", name)). nil: discard.
	Log *slog.Logger

	HealthInterval time.Duration // how often Health is asked; default 10s
	HealthTimeout  time.Duration // a Health call slower than this is a hung plugin; default 5s
	// SendGrace is how long past the caller's deadline a Send may take
	// before the plugin is declared hung; default 5s.
	SendGrace time.Duration
	// SendTimeout bounds a Send whose context has no deadline; default 60s.
	SendTimeout time.Duration
	// StartTimeout bounds handshake plus Configure; default 60s.
	StartTimeout time.Duration
	MinBackoff   time.Duration // first restart delay; default 250ms
	MaxBackoff   time.Duration // restart delay cap; default 30s
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HealthInterval, 10*time.Second)
	def(&o.HealthTimeout, 5*time.Second)
	def(&o.SendGrace, 5*time.Second)
	def(&o.SendTimeout, 60*time.Second)
	def(&o.StartTimeout, 60*time.Second)
	def(&o.MinBackoff, 250*time.Millisecond)
	def(&o.MaxBackoff, 30*time.Second)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Env.Name == "" {
		o.Env.Name = o.Name
	}
}

// ErrClosed is returned by calls on a Plugin after Close.
var ErrClosed = errors.New("transport plugin closed")

// Plugin is a running, supervised transport plugin. Its methods are safe
// for concurrent use.
type Plugin struct {
	o        Options
	log      *slog.Logger
	settings []byte
	events   chan sdk.Event

	ctx    context.Context // the Plugin's life; ends at Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the supervisor has stopped everything

	mu     sync.Mutex
	cur    *instance     // the live process; nil while restarting
	ready  chan struct{} // closed when cur is set; replaced when it is cleared
	closed bool
}

// Start starts the plugin and configures it. The error of a plugin's
// Configure comes back with the plugin's own words (the admin reads it),
// sdk.Permanent if the plugin said so; a plugin that cannot be started or
// fails the handshake is explained as well as go-plugin and the plugin's
// stderr allow. ctx bounds the start only, not the plugin's life.
func Start(ctx context.Context, o Options) (*Plugin, error) {
	o.setDefaults()
	if o.Name == "" {
		return nil, errors.New("pluginhost: transport name missing")
	}
	settings, err := json.Marshal(jsonable(o.Settings))
	if err != nil {
		return nil, fmt.Errorf("transport %s: settings: %w", o.Name, err)
	}
	if o.Env.StateDir != "" {
		if err := os.MkdirAll(o.Env.StateDir, 0o750); err != nil {
			return nil, fmt.Errorf("transport %s: state dir: %w", o.Name, err)
		}
	}
	if _, err := o.command(); err != nil {
		return nil, err
	}
	p := &Plugin{
		o:        o,
		log:      o.Log,
		settings: settings,
		events:   make(chan sdk.Event, 64),
		done:     make(chan struct{}),
		ready:    make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	inst, err := p.launch(ctx)
	if err != nil {
		p.cancel()
		return nil, err
	}
	p.setCurrent(inst)
	go p.supervise(inst)
	return p, nil
}

// command builds the plugin's command line from the options.
func (o *Options) command() (*exec.Cmd, error) {
	var cmd *exec.Cmd
	switch {
	case filepath.IsAbs(o.Plugin):
		cmd = exec.Command(o.Plugin)
	case o.Plugin != "" && !strings.ContainsAny(o.Plugin, `/\`):
		if o.Self == "" {
			return nil, fmt.Errorf("transport %s: built-in plugin %q needs the smsmilter binary's path", o.Name, o.Plugin)
		}
		args := append(append([]string(nil), o.SelfArgs...), "plugin", o.Plugin)
		cmd = exec.Command(o.Self, args...)
	default:
		return nil, fmt.Errorf("transport %s: plugin %q: want a built-in name (outbox, smpp, modem) or an absolute path", o.Name, o.Plugin)
	}
	// go-plugin appends the host environment after ours, where it would
	// override ExtraEnv; so it is told to skip it and we add it first.
	cmd.Env = append(os.Environ(), o.ExtraEnv...)
	setProcAttr(cmd)
	return cmd, nil
}

// Events returns the channel of incoming SMS and delivery reports. It is
// the same channel for the Plugin's whole life, across restarts, and is
// closed by Close. Read it: a full channel holds back the plugin's stream.
func (p *Plugin) Events() <-chan sdk.Event { return p.events }

// Send submits one SMS. A transport's failure comes back with its text and
// sdk.IsPermanent telling whether to give up; anything else (the plugin
// restarting, crashing mid-send, hung, ctx ending) is temporary.
func (p *Plugin) Send(ctx context.Context, m sdk.Message) ([]sdk.PartResult, error) {
	inst, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(p.o.SendTimeout)
	}
	timeout := time.Until(deadline)
	if timeout <= 0 {
		return nil, fmt.Errorf("transport %s: send %s: %w", p.o.Name, m.ID, context.DeadlineExceeded)
	}
	// The call gets SendGrace beyond the caller's deadline, which the
	// plugin is told in the request: a plugin that honours its deadline
	// answers in time; one that does not is hung, and is replaced.
	// Cancelling ctx (not its deadline) ends the call at once.
	callCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline.Add(p.o.SendGrace))
	defer cancel()
	stopCtx := context.AfterFunc(ctx, func() {
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			cancel()
		}
	})
	defer stopCtx()
	// A plugin being replaced will not answer.
	stopInst := context.AfterFunc(inst.ctx, cancel)
	defer stopInst()

	resp, err := inst.rpc.Send(callCtx, &pb.SendRequest{
		Id:        m.ID,
		To:        m.To,
		From:      m.From,
		Text:      m.Text,
		Encoding:  m.Encoding,
		Parts:     int32(m.Parts),
		TimeoutMs: max(timeout.Milliseconds(), 1),
	})
	if err != nil {
		switch {
		case inst.ctx.Err() != nil:
			err = fmt.Errorf("plugin restarting: %w", context.Cause(inst.ctx))
		case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = ctx.Err()
		case callCtx.Err() != nil:
			err = fmt.Errorf("plugin hung: no answer %v after the deadline", p.o.SendGrace)
			p.fail(inst, fmt.Errorf("send %s: %w", m.ID, err))
		default:
			p.checkRPCError(inst, "send", err)
		}
		return nil, fmt.Errorf("transport %s: send %s: %w", p.o.Name, m.ID, err)
	}
	if e := resp.GetError(); e != nil {
		return nil, p.transportError(e)
	}
	parts := make([]sdk.PartResult, len(resp.GetParts()))
	for i, r := range resp.GetParts() {
		parts[i] = sdk.PartResult{Index: int(r.GetIndex()), Ref: r.GetRef()}
	}
	return parts, nil
}

// Health returns nil when the transport can send now.
func (p *Plugin) Health(ctx context.Context) error {
	inst, err := p.current(ctx)
	if err != nil {
		return err
	}
	resp, err := inst.rpc.Health(ctx, &pb.HealthRequest{})
	if err != nil {
		p.checkRPCError(inst, "health", err)
		return fmt.Errorf("transport %s: health: %w", p.o.Name, err)
	}
	if e := resp.GetError(); e != nil {
		return p.transportError(e)
	}
	return nil
}

// Close stops the plugin process (asking it to shut down cleanly first)
// and closes the Events channel. It waits for the process to end.
func (p *Plugin) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		p.cancel()
	}
	<-p.done
	return nil
}

// transportError turns an in-band error into one sdk.IsPermanent reads.
func (p *Plugin) transportError(e *pb.Error) error {
	err := fmt.Errorf("transport %s: %s", p.o.Name, e.GetMessage())
	if e.GetPermanent() {
		return sdk.Permanent(err)
	}
	return err
}

// checkRPCError condemns the process when a call failed in a way that
// means the connection to it is gone.
func (p *Plugin) checkRPCError(inst *instance, what string, err error) {
	if status.Code(err) == codes.Unavailable || inst.client.Exited() {
		p.fail(inst, fmt.Errorf("%s: %w", what, err))
	}
}

// current returns the live process, waiting for a restart to finish (or
// ctx to end).
func (p *Plugin) current(ctx context.Context) (*instance, error) {
	for {
		p.mu.Lock()
		inst, ready, closed := p.cur, p.ready, p.closed
		p.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("transport %s: %w", p.o.Name, ErrClosed)
		}
		if inst != nil {
			return inst, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("transport %s: plugin restarting: %w", p.o.Name, ctx.Err())
		case <-p.ctx.Done():
			return nil, fmt.Errorf("transport %s: %w", p.o.Name, ErrClosed)
		}
	}
}

func (p *Plugin) setCurrent(inst *instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur = inst
	select {
	case <-p.ready: // already open for business
	default:
		close(p.ready)
	}
}

// fail condemns inst: it is taken out of service at once, and the
// supervisor kills it and starts another. The first reason is kept.
func (p *Plugin) fail(inst *instance, reason error) {
	p.mu.Lock()
	if p.cur == inst {
		p.cur = nil
		p.ready = make(chan struct{})
	}
	p.mu.Unlock()
	inst.kill(reason)
}

// grpcPlugin is the host side of the go-plugin glue; plugins/sdk has the
// plugin side.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (grpcPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("pluginhost: the plugin side of a transport is plugins/sdk")
}

func (grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewTransportClient(c), nil
}

// jsonable converts what YAML decoders may produce (map[any]any) into
// values encoding/json accepts.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = jsonable(x)
		}
		return m
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = jsonable(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = jsonable(x)
		}
		return s
	}
	return v
}
