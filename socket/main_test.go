package socket

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a
// session's reader or writer, a dispatcher, a release of a kept lease, a
// NATS client or server. Nothing is ignored: Run returns only after every
// goroutine it started, and the harness (harness_test.go) closes its
// devices, connections and server and waits for their goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
