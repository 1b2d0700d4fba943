package device

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the tests when a goroutine outlives them: a client's
// reader or reconnect loop left running after Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
