package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smsmilter/smsmilter/internal/pluginlog"
	pb "github.com/smsmilter/smsmilter/plugins/proto"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// instance is one plugin process.
type instance struct {
	client  *plugin.Client
	cmd     *exec.Cmd
	rpc     pb.TransportClient
	started time.Time
	// ctx ends when the process is condemned (or the Plugin closes); its
	// cause says why.
	ctx  context.Context
	kill context.CancelCauseFunc
	wg   sync.WaitGroup // the watchers
}

func (i *instance) pid() int {
	if i.cmd.Process == nil {
		return 0
	}
	return i.cmd.Process.Pid
}

// stableAfter is how long a process must have run for its death to count
// as a fresh failure rather than one more in a crash loop.
const stableAfter = time.Minute

// launch starts a process, completes the handshake and configures it.
func (p *Plugin) launch(ctx context.Context) (*instance, error) {
	cmd, err := p.o.command()
	if err != nil {
		return nil, err
	}
	stderr := newTail()
	// go-plugin's start cannot be interrupted; a start deadline is the
	// nearest thing to honouring ctx.
	startTimeout := p.o.StartTimeout
	if dl, ok := ctx.Deadline(); ok {
		startTimeout = max(min(startTimeout, time.Until(dl)), time.Millisecond)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  sdk.ProtocolVersion,
			MagicCookieKey:   sdk.MagicCookieKey,
			MagicCookieValue: sdk.MagicCookieValue,
		},
		Plugins:          plugin.PluginSet{sdk.PluginName: grpcPlugin{}},
		Cmd:              cmd,
		SkipHostEnv:      true, // command() put it in already
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     startTimeout,
		Logger:           pluginlog.HCLogger(p.log),
		Stderr:           stderr,
		// What the plugin prints on stdout/stderr (fmt.Print, a library's
		// log) comes over go-plugin's stdio stream; keep it.
		SyncStdout: pluginlog.Stdout(p.log),
		SyncStderr: pluginlog.Stderr(p.log),
		// Not Managed: go-plugin's managed list never forgets a client, so
		// every restart would leak one; Close stops ours.
	})
	inst := &instance{client: client, cmd: cmd, started: time.Now()}
	inst.ctx, inst.kill = context.WithCancelCause(p.ctx)

	proto, err := client.Client()
	if err != nil {
		inst.kill(err)
		p.stop(inst, false)
		return nil, p.startError(err, stderr)
	}
	raw, err := proto.Dispense(sdk.PluginName)
	if err != nil {
		inst.kill(err)
		p.stop(inst, false)
		return nil, fmt.Errorf("transport %s: %w", p.o.Name, err)
	}
	inst.rpc = raw.(pb.TransportClient)

	cctx, cancel := context.WithTimeout(ctx, p.o.StartTimeout)
	defer cancel()
	resp, err := inst.rpc.Configure(cctx, &pb.ConfigureRequest{
		Env: &pb.Env{
			Name:          p.o.Env.Name,
			StateDir:      p.o.Env.StateDir,
			DefaultRegion: p.o.Env.DefaultRegion,
		},
		SettingsJson: p.settings,
	})
	if err == nil && resp.GetError() != nil {
		err = p.transportError(resp.GetError())
	} else if err != nil {
		err = fmt.Errorf("transport %s: configure: %w", p.o.Name, err)
	}
	if err != nil {
		inst.kill(err)
		p.stop(inst, false)
		return nil, err
	}
	p.log.Info("transport plugin started", "plugin", p.o.Plugin, "pid", inst.pid())

	inst.wg.Add(2)
	go p.watchEvents(inst)
	go p.watchHealth(inst)
	return inst, nil
}

// startError explains a failed start with what the plugin printed.
func (p *Plugin) startError(err error, stderr *tail) error {
	out := stderr.String()
	switch {
	case strings.Contains(out, "This binary is a plugin"):
		return fmt.Errorf("transport %s: plugin %s failed the handshake: it does not accept smsmilter's magic cookie (a go-plugin plugin for another program?)", p.o.Name, p.o.Plugin)
	case strings.Contains(err.Error(), "incompatible API version"):
		return fmt.Errorf("transport %s: plugin %s failed the handshake (smsmilter speaks protocol %d): %w", p.o.Name, p.o.Plugin, sdk.ProtocolVersion, err)
	case out != "":
		return fmt.Errorf("transport %s: plugin %s: %w; it said:\n%s", p.o.Name, p.o.Plugin, err, out)
	}
	return fmt.Errorf("transport %s: plugin %s: %w", p.o.Name, p.o.Plugin, err)
}

// supervise restarts the plugin whenever its process is condemned, until
// the Plugin is closed.
func (p *Plugin) supervise(inst *instance) {
	defer close(p.done)
	defer close(p.events) // after every watcher is gone (stop waits)
	failures := 0
	for {
		select {
		case <-p.ctx.Done():
		case <-inst.ctx.Done():
		}
		if p.ctx.Err() != nil { // closing: inst.ctx ended with it
			p.fail(inst, ErrClosed)
			p.stop(inst, true)
			return
		}
		p.log.Warn("transport plugin failed; restarting", "pid", inst.pid(), "reason", context.Cause(inst.ctx))
		p.stop(inst, false)
		if time.Since(inst.started) > stableAfter {
			failures = 0
		}
		for {
			delay := min(p.o.MinBackoff<<min(failures, 16), p.o.MaxBackoff)
			failures++
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(delay):
			}
			var err error
			inst, err = p.launch(p.ctx)
			if err == nil {
				break
			}
			if p.ctx.Err() != nil {
				return
			}
			p.log.Error("transport plugin restart failed", "error", err, "attempt", failures)
		}
		p.setCurrent(inst)
	}
}

// stop ends a condemned process and waits for its watchers. A graceful
// stop (Close) lets the plugin close its link; a condemned one is killed
// outright, since it may be hung (even stopped, where go-plugin's polite
// shutdown call would never return).
func (p *Plugin) stop(inst *instance, graceful bool) {
	if !graceful && inst.cmd.Process != nil {
		// os.Process knows when it has been reaped, so this cannot hit a
		// recycled pid.
		_ = inst.cmd.Process.Kill()
	}
	killed := make(chan struct{})
	go func() {
		inst.client.Kill() // waits for the process and go-plugin's goroutines
		close(killed)
	}()
	select {
	case <-killed:
	case <-time.After(10 * time.Second):
		// go-plugin gives a plugin 2s to exit after a shutdown request; one
		// that blocks that request itself is killed here.
		if inst.cmd.Process != nil {
			_ = inst.cmd.Process.Kill()
		}
		<-killed
	}
	inst.wg.Wait()
}

// watchEvents forwards the process's event stream; the stream ending
// means the process (or the connection to it) is gone.
func (p *Plugin) watchEvents(inst *instance) {
	defer inst.wg.Done()
	stream, err := inst.rpc.Events(inst.ctx, &pb.EventsRequest{})
	if err != nil {
		p.fail(inst, fmt.Errorf("events: %w", err))
		return
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			if inst.ctx.Err() == nil {
				if err == io.EOF {
					err = errors.New("stream ended")
				}
				p.fail(inst, fmt.Errorf("events: %w", err))
			}
			return
		}
		e, ok := fromWire(ev)
		if !ok {
			continue
		}
		select {
		case p.events <- e:
		case <-inst.ctx.Done():
			return
		}
	}
}

// exitPoll is how often the process is checked for having exited; the
// event stream usually notices first.
const exitPoll = 250 * time.Millisecond

// watchHealth notices an exited process and a hung one.
func (p *Plugin) watchHealth(inst *instance) {
	defer inst.wg.Done()
	poll := time.NewTicker(exitPoll)
	defer poll.Stop()
	health := time.NewTicker(p.o.HealthInterval)
	defer health.Stop()
	var lastErr string
	for {
		select {
		case <-inst.ctx.Done():
			return
		case <-poll.C:
			if inst.client.Exited() {
				p.fail(inst, errors.New("plugin process exited"))
				return
			}
		case <-health.C:
			ctx, cancel := context.WithTimeout(inst.ctx, p.o.HealthTimeout)
			resp, err := inst.rpc.Health(ctx, &pb.HealthRequest{})
			cancel()
			switch {
			case inst.ctx.Err() != nil:
				return
			case status.Code(err) == codes.DeadlineExceeded:
				p.fail(inst, fmt.Errorf("plugin hung: no health answer within %v", p.o.HealthTimeout))
				return
			case err != nil:
				p.fail(inst, fmt.Errorf("health: %w", err))
				return
			}
			// An unhealthy transport (link down) is the plugin's to recover;
			// log changes only.
			msg := resp.GetError().GetMessage()
			if msg != lastErr {
				if msg != "" {
					p.log.Warn("transport unhealthy", "error", msg)
				} else {
					p.log.Info("transport healthy again")
				}
				lastErr = msg
			}
		}
	}
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func fromWire(ev *pb.Event) (sdk.Event, bool) {
	if in := ev.GetIncoming(); in != nil {
		return sdk.Event{Incoming: &sdk.Incoming{
			From: in.GetFrom(), To: in.GetTo(), Text: in.GetText(), At: fromUnixNano(in.GetAtUnixNano()),
		}}, true
	}
	if r := ev.GetReport(); r != nil {
		return sdk.Event{Report: &sdk.Report{
			Ref: r.GetRef(), State: r.GetState(), Error: r.GetError(), At: fromUnixNano(r.GetAtUnixNano()),
		}}, true
	}
	return sdk.Event{}, false
}
