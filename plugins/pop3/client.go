package pop3

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smsmilter/smsmilter/internal/pluginlog"
	pb "github.com/smsmilter/smsmilter/plugins/pop3/proto"
)

// Config is what the plugin is configured with (pop3.proto's
// ConfigureRequest; the config file's pop3 section).
type Config struct {
	Listen      string // plain POP3 + STLS, e.g. 127.0.0.1:1110
	TLSListen   string // implicit TLS, e.g. :995
	TLSCert     string // PEM files; needed for STLS and TLSListen
	TLSKey      string
	StateDir    string // the plugin's own directory; mail is in StateDir/maildir
	IdleTimeout time.Duration
}

// Options says how to run the plugin.
type Options struct {
	// Path and Args run the plugin: the smsmilter binary itself
	// (os.Executable) with Args {"plugin", "pop3"}.
	Path string
	Args []string
	// Env is added to the plugin's environment (the host's is passed on).
	Env []string

	Config Config
	Log    *slog.Logger

	// StartTimeout bounds starting and configuring one process. Default 30s.
	StartTimeout time.Duration
	// CheckInterval is how often the supervisor looks whether the process
	// still runs (default 1s); HealthInterval how often it asks it
	// (default 30s; a plugin that fails to answer is replaced).
	CheckInterval  time.Duration
	HealthInterval time.Duration
	// MinBackoff and MaxBackoff space the restarts of a plugin that keeps
	// failing (defaults 200ms and 30s).
	MinBackoff, MaxBackoff time.Duration
}

// Client is the host's handle on the POP3 plugin. Its methods are safe for
// concurrent use.
type Client struct {
	o   Options
	log *slog.Logger

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	done   chan struct{} // supervisor finished

	mu       sync.Mutex
	inst     *instance     // nil while down
	dying    chan struct{} // closed when the last dropped process is gone
	lastErr  error         // why the last start failed
	nextTry  time.Time     // no start before this (crash-loop backoff)
	backoff  time.Duration
	restarts int
}

type instance struct {
	pc   *plugin.Client
	cmd  *exec.Cmd
	rpc  pb.POP3Client
	addr *pb.ConfigureResponse
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("pop3 plugin: closed")

// Start launches and configures the plugin and keeps it running until
// Close. A plugin that cannot start or rejects its configuration is an
// error here, so a bad config shows at startup rather than at the first
// reply.
func Start(ctx context.Context, o Options) (*Client, error) {
	if o.Path == "" {
		return nil, errors.New("pop3 plugin: no command to run")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = time.Second
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 200 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	c := &Client{o: o, log: o.Log.With("plugin", "pop3"), done: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	inst, err := c.launch(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.inst = inst
	go c.supervise()
	return c, nil
}

// launch starts one plugin process and configures it.
func (c *Client) launch(ctx context.Context) (*instance, error) {
	cmd := exec.Command(c.o.Path, c.o.Args...)
	cmd.Env = append(os.Environ(), c.o.Env...)
	setProcAttr(cmd)
	timeout := c.o.StartTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(min(timeout, time.Until(dl)), time.Millisecond)
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake(),
		Plugins:          plugin.PluginSet{PluginName: &grpcPlugin{}},
		Cmd:              cmd,
		SkipHostEnv:      true, // cmd.Env has it already
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     timeout,
		Logger:           pluginlog.HCLogger(c.log),
		SyncStdout:       pluginlog.Stdout(c.log),
		SyncStderr:       pluginlog.Stderr(c.log),
		// Not Managed: go-plugin's managed list keeps every client ever
		// made, one per restart; Close kills ours.
	})
	fail := func(err error) (*instance, error) {
		pc.Kill()
		return nil, err
	}
	proto, err := pc.Client()
	if err != nil {
		return fail(fmt.Errorf("pop3 plugin: start %s: %w", c.o.Path, err))
	}
	raw, err := proto.Dispense(PluginName)
	if err != nil {
		return fail(fmt.Errorf("pop3 plugin: %w", err))
	}
	rpc := raw.(pb.POP3Client)
	cctx, cancel := context.WithTimeout(ctx, c.o.StartTimeout)
	defer cancel()
	cfg := c.o.Config
	addr, err := rpc.Configure(cctx, &pb.ConfigureRequest{
		Listen: cfg.Listen, TlsListen: cfg.TLSListen, TlsCert: cfg.TLSCert, TlsKey: cfg.TLSKey,
		StateDir: cfg.StateDir, IdleTimeoutSeconds: int64(cfg.IdleTimeout / time.Second),
	})
	if err != nil {
		return fail(fmt.Errorf("pop3 plugin: configure: %s", status.Convert(err).Message()))
	}
	inst := &instance{pc: pc, cmd: cmd, rpc: rpc, addr: addr}
	c.log.Info("pop3 plugin started", "pid", inst.pid(), "listen", addr.GetListenAddr(), "tls_listen", addr.GetTlsListenAddr())
	return inst, nil
}

func (i *instance) pid() int {
	if i.cmd.Process == nil {
		return 0
	}
	return i.cmd.Process.Pid
}

// current returns a running instance, starting one if the last is gone
// (unless a failed start is too recent: then the reason).
func (c *Client) current(ctx context.Context) (*instance, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if c.inst != nil && !c.inst.pc.Exited() {
		return c.inst, nil
	}
	if c.inst != nil {
		c.dropLocked(c.inst, "process exited")
	}
	if time.Now().Before(c.nextTry) {
		return nil, fmt.Errorf("pop3 plugin unavailable: %w", c.lastErr)
	}
	return c.restartLocked(ctx)
}

// restartLocked starts a new process; c.mu is held, so concurrent callers
// wait for this one start instead of each starting their own.
func (c *Client) restartLocked(ctx context.Context) (*instance, error) {
	c.waitDyingLocked()
	inst, err := c.launch(ctx)
	if err != nil {
		c.backoff = min(max(2*c.backoff, c.o.MinBackoff), c.o.MaxBackoff)
		c.nextTry = time.Now().Add(c.backoff)
		c.lastErr = err
		c.log.Error("pop3 plugin restart failed", "err", err, "retry_in", c.backoff)
		return nil, err
	}
	c.inst, c.backoff, c.lastErr = inst, 0, nil
	c.restarts++
	return inst, nil
}

// dropLocked forgets (and kills) an instance that is dead or condemned.
func (c *Client) dropLocked(inst *instance, why string) {
	if c.inst != inst {
		return
	}
	c.inst = nil
	c.log.Warn("pop3 plugin stopped; restarting", "pid", inst.pid(), "reason", why)
	// Killing a hung process takes a while: not under c.mu. The next start
	// waits for it, because the new process needs the same ports.
	done := make(chan struct{})
	go func() { inst.pc.Kill(); close(done) }()
	c.dying = done
}

// waitDyingLocked waits (bounded) for the last dropped process to be gone.
func (c *Client) waitDyingLocked() {
	if c.dying == nil {
		return
	}
	select {
	case <-c.dying:
	case <-time.After(10 * time.Second):
		c.log.Warn("pop3 plugin: old process still not gone; starting anyway")
	}
	c.dying = nil
}

// supervise replaces a plugin that exited or stopped answering, so POP3
// keeps being served even when no reply arrives to notice.
func (c *Client) supervise() {
	defer close(c.done)
	tick := time.NewTicker(c.o.CheckInterval)
	defer tick.Stop()
	lastHealth := time.Now()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
		c.mu.Lock()
		inst := c.inst
		if inst != nil && inst.pc.Exited() {
			c.dropLocked(inst, "process exited")
			inst = nil
		}
		if inst == nil && !time.Now().Before(c.nextTry) && c.ctx.Err() == nil {
			ctx, cancel := context.WithTimeout(c.ctx, c.o.StartTimeout)
			c.restartLocked(ctx)
			cancel()
		}
		c.mu.Unlock()
		if inst == nil || time.Since(lastHealth) < c.o.HealthInterval {
			continue
		}
		lastHealth = time.Now()
		if err := c.health(inst); err != nil && c.ctx.Err() == nil {
			c.mu.Lock()
			c.dropLocked(inst, "health check failed: "+err.Error())
			c.mu.Unlock()
		}
	}
}

func (c *Client) health(inst *instance) error {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	_, err := inst.rpc.Health(ctx, &pb.HealthRequest{})
	return err
}

// retryable reports whether an RPC failed because the process or the
// connection did, so the call may go to a new process.
func retryable(inst *instance, err error) bool {
	return status.Code(err) == codes.Unavailable || inst.pc.Exited()
}

// Deliver stores msg in mailbox (an email address) and returns its ID. If
// the plugin died, a new one is started and the delivery tried once more:
// a message whose first attempt was written just before the crash may be
// stored twice (at least once, as everywhere in smsmilter).
func (c *Client) Deliver(ctx context.Context, mailbox string, msg []byte) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		// A hung plugin must not hang the caller.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var inst *instance
		inst, err = c.current(ctx)
		if err != nil {
			return "", err
		}
		var resp *pb.DeliverResponse
		resp, err = inst.rpc.Deliver(ctx, &pb.DeliverRequest{Mailbox: mailbox, Message: msg})
		if err == nil {
			return resp.GetId(), nil
		}
		if !retryable(inst, err) || ctx.Err() != nil {
			break
		}
		c.mu.Lock()
		c.dropLocked(inst, "delivery failed: "+status.Convert(err).Message())
		c.mu.Unlock()
	}
	return "", fmt.Errorf("pop3 plugin: deliver to %s: %w", mailbox, err)
}

// Permanent reports whether a Deliver error cannot be helped by retrying
// (an invalid mailbox name, an oversized message).
func Permanent(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	return errors.As(err, &se) && se.GRPCStatus().Code() == codes.InvalidArgument
}

// Health asks the running plugin whether it can store and serve mail.
func (c *Client) Health(ctx context.Context) error {
	inst, err := c.current(ctx)
	if err != nil {
		return err
	}
	if _, err := inst.rpc.Health(ctx, &pb.HealthRequest{}); err != nil {
		return fmt.Errorf("pop3 plugin: %s", status.Convert(err).Message())
	}
	return nil
}

// Addrs returns the addresses the running plugin listens on ("" for none,
// or while it is down).
func (c *Client) Addrs() (listen, tlsListen string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inst == nil {
		return "", ""
	}
	return c.inst.addr.GetListenAddr(), c.inst.addr.GetTlsListenAddr()
}

// Restarts counts the processes started after the first.
func (c *Client) Restarts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restarts
}

// Close stops the plugin (its POP3 sessions end without deleting
// anything) and the supervisor.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inst != nil {
		c.inst.pc.Kill() // asks the plugin to shut down, then kills it
		c.inst = nil
	}
	c.waitDyingLocked()
	return nil
}
