package smpp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/linxGnu/gosmpp"
	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"
)

// connector dials and binds for gosmpp. It replaces gosmpp's own: that one
// cannot read a refused bind_resp without a body (SMPP 3.4 §4.1.2: "not
// returned if the command_status field contains a non-zero value", which
// is what node-smpp and many SMSCs send) and reports io.EOF instead of the
// SMSC's reason; it also waits for bind_resp without a deadline.
type connector struct {
	ctx      context.Context
	addr     string
	bindType pdu.BindingType
	req      func() *pdu.BindRequest
	timeout  time.Duration
	smscID   string // system_id in the bind_resp
}

func (c *connector) GetBindType() pdu.BindingType { return c.bindType }

func (c *connector) Connect() (*gosmpp.Connection, error) {
	d := net.Dialer{Timeout: c.timeout}
	nc, err := d.DialContext(c.ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	// gosmpp sets its own read and write deadlines once bound.
	_ = nc.SetDeadline(time.Now().Add(c.timeout))
	stop := context.AfterFunc(c.ctx, func() { _ = nc.Close() })
	defer stop()
	conn := gosmpp.NewConnection(nc)
	req := c.req()
	if _, err := conn.WritePDU(req); err != nil {
		_ = nc.Close()
		return nil, err
	}
	for {
		p, hdr, err := readPDU(conn)
		if err != nil {
			_ = nc.Close()
			if c.ctx.Err() != nil {
				return nil, c.ctx.Err()
			}
			return nil, fmt.Errorf("waiting for bind_resp: %w", err)
		}
		switch hdr.CommandID {
		case data.BIND_TRANSCEIVER_RESP, data.BIND_TRANSMITTER_RESP, data.BIND_RECEIVER_RESP, data.GENERIC_NACK:
			if hdr.CommandStatus != data.ESME_ROK {
				_ = nc.Close()
				return nil, &StatusError{Op: "bind", Status: uint32(hdr.CommandStatus)}
			}
			if r, ok := p.(*pdu.BindResp); ok {
				c.smscID = r.SystemID
				return conn, nil
			}
			_ = nc.Close()
			return nil, fmt.Errorf("unexpected %T in answer to bind", p)
		}
		// Anything else before bind_resp (an early enquire_link) is dropped.
	}
}

// readPDU reads one PDU. A refused response may be header-only; it is
// returned with p == nil and its header.
func readPDU(r io.Reader) (pdu.PDU, pdu.Header, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, pdu.Header{}, err
	}
	hdr := pdu.ParseHeader(h)
	if hdr.CommandLength < 16 || hdr.CommandLength > data.MAX_PDU_LEN {
		return nil, hdr, fmt.Errorf("invalid command_length %d", hdr.CommandLength)
	}
	body := make([]byte, hdr.CommandLength-16)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, hdr, err
	}
	if hdr.CommandStatus != data.ESME_ROK {
		return nil, hdr, nil
	}
	p, err := pdu.Parse(bytes.NewReader(append(h[:], body...)))
	if err != nil {
		return nil, hdr, err
	}
	return p, hdr, nil
}
