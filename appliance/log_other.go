//go:build !unix

package appliance

import "io"

// isJournal: there is no systemd journal here.
func isJournal(io.Writer) bool { return false }
