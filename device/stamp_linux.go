//go:build linux && (amd64 || arm64)

package device

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

// socketTimes: the kernel's receive times are available here.
const socketTimes = true

// stampReader reads a TCP connection with recvmsg and keeps the kernel's
// receive time (SO_TIMESTAMPNS) of the last segment each read took: when
// an ACK reached the device's socket, however long the reader then waited
// for a CPU. On a box the simulated devices share with the gateway, that
// wait is the devices', not the gateway's.
type stampReader struct {
	rc   syscall.RawConn
	oob  [64]byte
	last time.Time // of the last read; zero if it carried no time
}

// newStampReader returns a stampReader of nc, nil when nc is not plain TCP
// or the kernel refuses the option.
func newStampReader(nc net.Conn) *stampReader {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return nil
	}
	return &stampReader{rc: rc}
}

func (r *stampReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n, oobn int
	var err error
	if rerr := r.rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, err = syscall.Recvmsg(int(fd), p, r.oob[:], 0)
		return !errors.Is(err, syscall.EAGAIN)
	}); rerr != nil {
		return 0, rerr // closed, or a deadline
	}
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	r.last = timestampOf(r.oob[:oobn])
	return n, nil
}

// timestampOf finds the SCM_TIMESTAMPNS control message in oob: on
// 64-bit Linux a cmsghdr (length 8 bytes, level 4, type 4) and a timespec
// (seconds 8, nanoseconds 8), each message aligned to 8 bytes.
func timestampOf(oob []byte) time.Time {
	const hdr = 16
	for len(oob) >= hdr {
		l := int(binary.NativeEndian.Uint64(oob))
		level := int32(binary.NativeEndian.Uint32(oob[8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:]))
		if l < hdr || l > len(oob) {
			return time.Time{}
		}
		if level == syscall.SOL_SOCKET && typ == syscall.SCM_TIMESTAMPNS && l >= hdr+16 {
			sec := int64(binary.NativeEndian.Uint64(oob[hdr:]))
			nsec := int64(binary.NativeEndian.Uint64(oob[hdr+8:]))
			return time.Unix(sec, nsec)
		}
		oob = oob[min(len(oob), (l+7)&^7):]
	}
	return time.Time{}
}
