package proto

import (
	"testing"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// TestGeneratedCodeIsCurrent checks that the committed code is what
// pop3.proto generates with the pinned tools (testutil.CheckGeneratedProto).
func TestGeneratedCodeIsCurrent(t *testing.T) {
	testutil.CheckGeneratedProto(t, "pop3.proto", "./plugins/pop3/proto")
}
