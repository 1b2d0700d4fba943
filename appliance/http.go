package appliance

import (
	"io"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/term"
)

func (a *Appliance) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	m.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.check(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return m
}

// check reports whether every part of the appliance serves.
func (a *Appliance) check() error {
	select {
	case <-a.ready:
	default:
		return errNotStarted
	}
	if !a.nats.NATS().ReadyForConnections(10 * time.Millisecond) {
		return errNATS
	}
	if a.sock != nil && !a.sock.Ready() {
		return errSocket
	}
	return nil
}

type readyErr string

func (e readyErr) Error() string { return string(e) }

const (
	errNotStarted = readyErr("starting")
	errNATS       = readyErr("nats server not ready")
	errSocket     = readyErr("device listener not serving")
)

// NewLogger returns the appliance's logger: text on w at level (debug,
// info, warn, error). Without a terminal (journald) the time is left out,
// because the journal stamps every line.
func NewLogger(w io.Writer, level string, detectTerminal bool) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if f, ok := w.(interface{ Fd() uintptr }); detectTerminal && ok && !term.IsTerminal(int(f.Fd())) {
		opts.ReplaceAttr = func(groups []string, at slog.Attr) slog.Attr {
			if len(groups) == 0 && at.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return at
		}
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
