package proto

import (
	"testing"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// TestGeneratedCodeIsCurrent checks that the committed code is what
// transport.proto generates with the pinned tools (testutil.CheckGeneratedProto).
func TestGeneratedCodeIsCurrent(t *testing.T) {
	testutil.CheckGeneratedProto(t, "transport.proto", "./plugins/proto")
}
