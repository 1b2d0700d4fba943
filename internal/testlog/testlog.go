// Package testlog holds what tests of several packages use to collect
// logs.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer collects output written from several goroutines (a logger's),
// to be read while they still write.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
