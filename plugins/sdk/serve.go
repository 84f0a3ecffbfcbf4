package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/smsmilter/smsmilter/plugins/proto"
)

// The go-plugin handshake, shared by the host and every plugin. A plugin
// started with another cookie refuses to run (it was not started by
// smsmilter), and one built for another protocol version is refused by the
// host with a message naming both versions.
const (
	MagicCookieKey   = "SMSMILTER_PLUGIN"
	MagicCookieValue = "4b0a1c2e-sms-transport"
	// ProtocolVersion is the version of plugins/proto/transport.proto.
	ProtocolVersion = 1
	// PluginName is the name the transport is dispensed under.
	PluginName = "transport"
)

// Serve runs t as a plugin: call it from main. It returns when the host
// shuts the plugin down, after calling t.Close. Run by hand (without the
// host's handshake), it prints a short explanation and exits 1.
func Serve(t Transport) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  ProtocolVersion,
			MagicCookieKey:   MagicCookieKey,
			MagicCookieValue: MagicCookieValue,
		},
		Plugins:    plugin.PluginSet{PluginName: &grpcPlugin{impl: t}},
		GRPCServer: plugin.DefaultGRPCServer,
		// go-plugin's own logs at Trace would flood the host's debug log.
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "go-plugin",
			Level:      hclog.Info,
			Output:     os.Stderr,
			JSONFormat: true,
		}),
	})
	_ = t.Close()
}

// Logger returns a logger for the plugin's own messages. It writes JSON
// lines to stderr in the shape go-plugin's host understands (@level,
// @message), so the host logs them at their level, with their attributes,
// through its own logger. Call it before Serve: Serve redirects os.Stderr.
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{
		Level:       slog.LevelDebug,
		ReplaceAttr: replaceAttr,
	}))
}

// replaceAttr shapes slog's JSON into hclog's: go-plugin's host reads
// @level and @message from each stderr line.
func replaceAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		// The host stamps lines itself; go-plugin would also insist on its
		// own time format for @timestamp.
		return slog.Attr{}
	case slog.LevelKey:
		return slog.String("@level", strings.ToLower(a.Value.String()))
	case slog.MessageKey:
		return slog.Attr{Key: "@message", Value: a.Value}
	}
	return a
}

// grpcPlugin is the plugin side of the go-plugin glue; the host has its own.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Transport
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterTransportServer(s, &server{impl: p.impl})
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("sdk: the host side of a transport plugin is internal/pluginhost")
}

// server adapts a Transport to the generated gRPC service.
type server struct {
	pb.UnimplementedTransportServer
	impl Transport
}

// wireError puts a transport's error in-band, keeping Permanent.
func wireError(err error) *pb.Error {
	if err == nil {
		return nil
	}
	return &pb.Error{Message: err.Error(), Permanent: IsPermanent(err)}
}

// recovered turns a panic in the author's code into a temporary error: a
// driver bug triggered by one message should fail that message, not kill
// the process (and every other send in flight with it).
func recovered(what string, errp *error) {
	if r := recover(); r != nil {
		fmt.Fprintf(os.Stderr, "panic in %s: %v\n%s", what, r, debug.Stack())
		*errp = fmt.Errorf("plugin panic in %s: %v", what, r)
	}
}

func (s *server) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	settings := map[string]any{}
	if len(req.GetSettingsJson()) > 0 {
		if err := json.Unmarshal(req.GetSettingsJson(), &settings); err != nil {
			return &pb.ConfigureResponse{Error: wireError(Permanent(fmt.Errorf("settings: %w", err)))}, nil
		}
		if settings == nil { // JSON null
			settings = map[string]any{}
		}
	}
	env := Env{
		Name:          req.GetEnv().GetName(),
		StateDir:      req.GetEnv().GetStateDir(),
		DefaultRegion: req.GetEnv().GetDefaultRegion(),
	}
	err := func() (err error) {
		defer recovered("Configure", &err)
		return s.impl.Configure(ctx, env, settings)
	}()
	return &pb.ConfigureResponse{Error: wireError(err)}, nil
}

func (s *server) Send(ctx context.Context, req *pb.SendRequest) (*pb.SendResponse, error) {
	if ms := req.GetTimeoutMs(); ms > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	m := Message{
		ID:       req.GetId(),
		To:       req.GetTo(),
		From:     req.GetFrom(),
		Text:     req.GetText(),
		Encoding: req.GetEncoding(),
		Parts:    int(req.GetParts()),
	}
	var parts []PartResult
	err := func() (err error) {
		defer recovered("Send", &err)
		parts, err = s.impl.Send(ctx, m)
		return err
	}()
	if err != nil {
		return &pb.SendResponse{Error: wireError(err)}, nil
	}
	resp := &pb.SendResponse{Parts: make([]*pb.PartResult, len(parts))}
	for i, p := range parts {
		resp.Parts[i] = &pb.PartResult{Index: int32(p.Index), Ref: p.Ref}
	}
	return resp, nil
}

func (s *server) Health(ctx context.Context, _ *pb.HealthRequest) (*pb.HealthResponse, error) {
	err := func() (err error) {
		defer recovered("Health", &err)
		return s.impl.Health(ctx)
	}()
	return &pb.HealthResponse{Error: wireError(err)}, nil
}

// Events runs the transport's Events for as long as the host listens. A
// transport whose Events returns nil early (it has nothing to receive) keeps
// the stream open: the host reads a closed stream as a dead plugin.
func (s *server) Events(_ *pb.EventsRequest, stream pb.Transport_EventsServer) error {
	ctx := stream.Context()
	ch := make(chan Event)
	done := make(chan error, 1)
	go func() {
		var err error
		defer func() { done <- err }()
		defer recovered("Events", &err)
		err = s.impl.Events(ctx, ch)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-done:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("events: %w", err)
			}
			<-ctx.Done()
			return nil
		case ev := <-ch:
			if ev.Incoming == nil && ev.Report == nil {
				continue
			}
			if err := stream.Send(toWire(ev)); err != nil {
				return err
			}
		}
	}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func toWire(ev Event) *pb.Event {
	switch {
	case ev.Incoming != nil:
		in := ev.Incoming
		return &pb.Event{Kind: &pb.Event_Incoming{Incoming: &pb.Incoming{
			From: in.From, To: in.To, Text: in.Text, AtUnixNano: unixNano(in.At),
		}}}
	case ev.Report != nil:
		r := ev.Report
		return &pb.Event{Kind: &pb.Event_Report{Report: &pb.Report{
			Ref: r.Ref, State: r.State, Error: r.Error, AtUnixNano: unixNano(r.At),
		}}}
	}
	return &pb.Event{}
}
