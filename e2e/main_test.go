// Package e2e holds smsmilter's end-to-end tests: real MTAs (a private
// Postfix instance here), the smsmilter binary built from this checkout, an
// SMPP peer (node-smpp), a DNS server for SPF, swaks as the mail client and
// smtp-sink standing in for the rest of the Internet. The plumbing is in
// e2e/internal/harness.
//
// They need root (Postfix), postfix, swaks, node with the peer's npm
// modules (npm ci --prefix transports/smpp/testdata/peer); without them
// they are skipped on a developer machine and fail in CI.
//
//	go test ./e2e/ -v -run Postfix
package e2e

import (
	"testing"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }
