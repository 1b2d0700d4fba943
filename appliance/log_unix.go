//go:build unix

package appliance

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// isJournal reports whether w is the systemd journal's stream: systemd sets
// JOURNAL_STREAM to the device and inode numbers of the stream it connects
// stdout or stderr to, and a file with the same numbers is that stream (a
// service whose stderr goes elsewhere inherits the variable all the same).
func isJournal(w io.Writer) bool {
	want := os.Getenv("JOURNAL_STREAM")
	f, ok := w.(*os.File)
	if want == "" || !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fmt.Sprintf("%d:%d", st.Dev, st.Ino) == want
}
