package redistest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the tests when a goroutine outlives them: a server's
// exit watcher or a client left running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
