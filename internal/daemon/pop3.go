package daemon

import (
	"context"
	"sync"
)

// mailboxClient is the host side of the POP3 plugin.
type mailboxClient interface {
	Deliver(ctx context.Context, mailbox string, msg []byte) (string, error)
	Close() error
}

// pop3Deliverer hands replies to the POP3 plugin while it runs; before it
// has started, deliveries fail and the reply is logged as not delivered.
type pop3Deliverer struct {
	mu sync.Mutex
	c  mailboxClient
}

func (p *pop3Deliverer) set(c mailboxClient) {
	p.mu.Lock()
	p.c = c
	p.mu.Unlock()
}

func (p *pop3Deliverer) Deliver(ctx context.Context, mailbox string, msg []byte) (string, error) {
	p.mu.Lock()
	c := p.c
	p.mu.Unlock()
	if c == nil {
		return "", errPOP3Down
	}
	return c.Deliver(ctx, mailbox, msg)
}

func (p *pop3Deliverer) close() {
	p.mu.Lock()
	c := p.c
	p.c = nil
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
