package appliance

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// timeFormat is RFC 3339 with milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// NewLogger returns the appliance's logger on w at the level of lv (which a
// reload may change), in format: "text" (the default, slog's key=value
// lines) or "json" (one object per line).
//
// When w is the systemd journal's stream (see isJournal), every line starts
// with its syslog priority, <3> for errors, <4> warnings, <6> info and <7>
// debug, which journald takes as the entry's priority (SyslogLevelPrefix=,
// on by default) so that `journalctl -p warning` finds what it should; and
// the time is left out, because the journal stamps every entry. Anywhere
// else every line starts with its time in RFC 3339 with milliseconds.
func NewLogger(w io.Writer, lv slog.Leveler, format string) *slog.Logger {
	journal := isJournal(w)
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) > 0 || a.Key != slog.TimeKey || a.Value.Kind() != slog.KindTime {
			return a
		}
		if journal {
			return slog.Attr{}
		}
		return slog.String(slog.TimeKey, a.Value.Time().Format(timeFormat))
	}}
	var out *priorityWriter
	if journal {
		out = &priorityWriter{w: w}
		w = out
	}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	if journal {
		h = &priorityHandler{inner: h, out: out}
	}
	return slog.New(h)
}

// priority is the syslog priority of a level: err, warning, info, debug.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}

// priorityHandler starts each line of its inner handler with the record's
// syslog priority. slog's text and JSON handlers write a record in one
// Write call, so the priority is handed to the writer for that call, under
// the writer's lock (shared by the handlers WithAttrs and WithGroup make).
type priorityHandler struct {
	inner slog.Handler
	out   *priorityWriter
}

func (h *priorityHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *priorityHandler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.prefix = priority(r.Level)
	return h.inner.Handle(ctx, r)
}

func (h *priorityHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &priorityHandler{inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *priorityHandler) WithGroup(name string) slog.Handler {
	return &priorityHandler{inner: h.inner.WithGroup(name), out: h.out}
}

// priorityWriter writes each line with the prefix priorityHandler set, in
// one write, so that lines of concurrent writers do not mix.
type priorityWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *priorityWriter) Write(b []byte) (int, error) {
	p.buf = append(append(p.buf[:0], p.prefix...), b...)
	if _, err := p.w.Write(p.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

// parseLevel reads a log.level value (validated before).
func parseLevel(s string) slog.Level {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return lv
}
