package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	"github.com/smsmilter/smsmilter/internal/maildir"
	pop3srv "github.com/smsmilter/smsmilter/internal/pop3"
	pb "github.com/smsmilter/smsmilter/plugins/pop3/proto"
)

// maxMessage bounds one delivered message. Replies are SMS text in a mail;
// anything near this is a bug upstream, not a reply.
const maxMessage = 4 << 20

// Serve runs the POP3 plugin in this process until the host stops it. creds
// checks POP3 passwords (the store); log should write hclog-shaped JSON to
// stderr (plugins/sdk.Logger) so the host logs each line at its level.
func Serve(creds pop3srv.Credentials, log *slog.Logger) {
	svc := newService(creds, log)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake(),
		Plugins:         plugin.PluginSet{PluginName: &grpcPlugin{impl: svc}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: "go-plugin", Level: hclog.Info, Output: os.Stderr, JSONFormat: true,
		}),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	svc.shutdown(ctx)
}

// service is the plugin side of pop3.proto.
type service struct {
	pb.UnimplementedPOP3Server
	creds pop3srv.Credentials
	log   *slog.Logger

	mu       sync.Mutex
	conf     *pb.ConfigureRequest // nil until configured
	resp     *pb.ConfigureResponse
	root     *maildir.Root
	srv      *pop3srv.Server
	serveErr error // set when a listener stopped on its own
}

func newService(creds pop3srv.Credentials, log *slog.Logger) *service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &service{creds: creds, log: log}
}

func (s *service) Configure(_ context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conf != nil {
		if gproto.Equal(s.conf, req) {
			return s.resp, nil
		}
		return nil, status.Error(codes.FailedPrecondition, "pop3 plugin already configured differently: restart it")
	}
	if req.GetStateDir() == "" {
		return nil, status.Error(codes.InvalidArgument, "pop3: state_dir is required")
	}
	if req.GetListen() == "" && req.GetTlsListen() == "" {
		return nil, status.Error(codes.InvalidArgument, "pop3: neither listen nor tls_listen is set")
	}
	var tlsConf *tls.Config
	switch {
	case req.GetTlsCert() != "" || req.GetTlsKey() != "":
		pair, err := tls.LoadX509KeyPair(req.GetTlsCert(), req.GetTlsKey())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "pop3: TLS certificate: %v", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	case req.GetTlsListen() != "":
		return nil, status.Error(codes.InvalidArgument, "pop3: tls_listen needs tls_cert and tls_key")
	}
	root, err := maildir.Open(filepath.Join(req.GetStateDir(), "maildir"))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "pop3: %v", err)
	}
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	resp := &pb.ConfigureResponse{}
	for _, l := range []struct {
		addr string
		out  *string
	}{{req.GetListen(), &resp.ListenAddr}, {req.GetTlsListen(), &resp.TlsListenAddr}} {
		if l.addr == "" {
			lns = append(lns, nil)
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			closeAll()
			return nil, status.Errorf(codes.InvalidArgument, "pop3: listen: %v", err)
		}
		lns = append(lns, ln)
		*l.out = ln.Addr().String()
	}
	srv := pop3srv.NewServer(pop3srv.Config{
		Listen:      req.GetListen(),
		TLSListen:   req.GetTlsListen(),
		TLSConfig:   tlsConf,
		Maildir:     root,
		Credentials: s.creds,
		Log:         s.log,
		IdleTimeout: time.Duration(req.GetIdleTimeoutSeconds()) * time.Second,
	})
	for i, ln := range lns {
		if ln == nil {
			continue
		}
		implicit := i == 1
		go func() {
			err := srv.Serve(ln, implicit)
			if !errors.Is(err, pop3srv.ErrServerClosed) {
				s.log.Error("pop3: listener stopped", "addr", ln.Addr().String(), "err", err)
				s.mu.Lock()
				s.serveErr = fmt.Errorf("listener %s: %w", ln.Addr(), err)
				s.mu.Unlock()
			}
		}()
	}
	s.conf, s.resp, s.root, s.srv = req, resp, root, srv
	s.log.Info("pop3: serving", "listen", resp.ListenAddr, "tls_listen", resp.TlsListenAddr,
		"stls", tlsConf != nil, "maildir", root.Dir())
	return resp, nil
}

func (s *service) configured() (*maildir.Root, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.root == nil {
		return nil, status.Error(codes.FailedPrecondition, "pop3 plugin not configured")
	}
	return s.root, nil
}

func (s *service) Deliver(_ context.Context, req *pb.DeliverRequest) (*pb.DeliverResponse, error) {
	root, err := s.configured()
	if err != nil {
		return nil, err
	}
	if len(req.GetMessage()) > maxMessage {
		return nil, status.Errorf(codes.InvalidArgument, "pop3: message of %d bytes is over the %d limit", len(req.GetMessage()), maxMessage)
	}
	id, err := root.Deliver(req.GetMailbox(), req.GetMessage())
	if errors.Is(err, maildir.ErrInvalidMailbox) {
		return nil, status.Errorf(codes.InvalidArgument, "pop3: %v", err)
	}
	if err != nil {
		s.log.Error("pop3: delivery failed", "mailbox", req.GetMailbox(), "err", err)
		return nil, status.Errorf(codes.Internal, "pop3: %v", err)
	}
	s.log.Info("pop3: delivered", "mailbox", req.GetMailbox(), "id", id, "bytes", len(req.GetMessage()))
	return &pb.DeliverResponse{Id: id}, nil
}

func (s *service) Health(context.Context, *pb.HealthRequest) (*pb.HealthResponse, error) {
	root, err := s.configured()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	serveErr := s.serveErr
	s.mu.Unlock()
	if serveErr != nil {
		return nil, status.Errorf(codes.Unavailable, "pop3: %v", serveErr)
	}
	// Writable state: what Deliver needs.
	f, err := os.CreateTemp(root.Dir(), ".health-*")
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "pop3: maildir not writable: %v", err)
	}
	f.Close()
	os.Remove(f.Name())
	return &pb.HealthResponse{}, nil
}

func (s *service) shutdown(ctx context.Context) {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv != nil {
		if err := srv.Shutdown(ctx); err != nil {
			s.log.Warn("pop3: shutdown", "err", err)
		}
	}
}
