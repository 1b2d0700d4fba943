package monitoring_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the tests when a goroutine outlives them: the appliance
// they scrape left running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
