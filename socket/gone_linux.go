package socket

import (
	"errors"
	"net"
	"syscall"
)

// peerGone reports whether the device at the other end of conn closed or
// reset it, looking without reading (MSG_PEEK): the end of the stream or
// a reset is queued. A HELLO read long after it was sent (this process
// was stopped, or the host was overloaded) may come from a connection
// the device gave up on and replaced by a session elsewhere; opening its
// session would take that live one over. Over TLS, or with bytes already
// read beyond the HELLO, it answers false: whatever follows is handled.
func peerGone(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var gone bool
	var b [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = n == 0 && err == nil || errors.Is(err, syscall.ECONNRESET)
		return true // never wait
	})
	return gone
}
