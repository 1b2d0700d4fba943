package socket

import (
	"strings"
	"testing"
	"time"
)

// TestNewRejectsHoldBeyondTTL: a hold longer than the lease TTL is a
// configuration error, named as such; a hold of exactly the TTL is not.
func TestNewRejectsHoldBeyondTTL(t *testing.T) {
	_, err := New(Config{TTL: time.Second, Hold: 2 * time.Second}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "hold 2s is longer than the lease TTL 1s") {
		t.Fatalf("hold 2s, TTL 1s: got %v, want the hold named", err)
	}
	_, err = New(Config{TTL: time.Second, Hold: time.Second}, nil, nil)
	if err == nil || strings.Contains(err.Error(), "hold") {
		t.Fatalf("hold = TTL: got %v, want only the missing connection and store", err)
	}
}
