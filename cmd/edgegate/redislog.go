package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// redisLogger passes go-redis's log lines to the appliance's logger, so
// that they have its format and a level (go-redis's own logger writes
// unlevelled lines of its own format to stderr).
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	r.l.Log(ctx, redisLevel(msg), msg)
}

// redisLevel gives a go-redis line a level. go-redis gives it none; at its
// default log level it logs little but failures (a dial that failed, a
// connection it dropped, a Sentinel that did not answer), which are
// warnings: they are retried, and what stays broken shows in the
// appliance's own errors and /readyz. A recovered panic is an error; what
// reports a change without a failure (a new master, a slot migration) is
// information.
func redisLevel(msg string) slog.Level {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "panic"):
		return slog.LevelError
	case containsAny(m, "fail", "error", "err=", "unexpected", "unknown", "not found", "rejected", "removing", "discard", "refused", "timeout", "i/o"):
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
