// Package pop3 is the POP3 plugin (DESIGN.md §7): a hashicorp/go-plugin
// plugin, over gRPC only, that stores SMS replies in a Maildir per mailbox
// and serves them over POP3 (internal/pop3).
//
// The plugin side is Serve, which `smsmilter plugin pop3` calls with the
// store as Credentials. The host side is Start, which runs that command,
// configures it and hands it replies with Client.Deliver; a plugin process
// that dies or hangs is replaced by a new one (go-plugin never restarts a
// plugin itself), and mail already delivered stays in the Maildir.
package pop3

import (
	"context"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/smsmilter/smsmilter/plugins/pop3/proto"
)

// The go-plugin handshake. The cookie differs from the transports' (plugins/sdk)
// so that neither kind of plugin can be started as the other.
const (
	MagicCookieKey   = "SMSMILTER_POP3_PLUGIN"
	MagicCookieValue = "9d51e7a0-pop3-mailboxes"
	// ProtocolVersion is the version of plugins/pop3/proto/pop3.proto.
	ProtocolVersion = 1
	// PluginName is the name the service is dispensed under.
	PluginName = "pop3"
)

func handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  ProtocolVersion,
		MagicCookieKey:   MagicCookieKey,
		MagicCookieValue: MagicCookieValue,
	}
}

// grpcPlugin binds the generated service to go-plugin. impl is set on the
// plugin side only.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl pb.POP3Server
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterPOP3Server(s, p.impl)
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewPOP3Client(c), nil
}
