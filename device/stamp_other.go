//go:build !(linux && (amd64 || arm64))

package device

import (
	"net"
	"time"
)

// socketTimes: the kernel's receive times are not available here.
const socketTimes = false

// stampReader keeps the kernel's receive time of each read where the
// kernel and this package know how (64-bit Linux); elsewhere there is
// none, and ACKs are timed when the reader handles them.
type stampReader struct {
	last time.Time
}

func newStampReader(net.Conn) *stampReader { return nil }

func (r *stampReader) Read(p []byte) (int, error) { panic("device: no stampReader here") }
