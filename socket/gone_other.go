//go:build !linux

package socket

import "net"

// peerGone is only known on Linux (see gone_linux.go).
func peerGone(net.Conn) bool { return false }
