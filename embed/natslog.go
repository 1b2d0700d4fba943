package embed

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
)

// logf passes one of nats-server's lines to slog at level, after natsLine
// has had its say. fatal, when not nil, also receives the line of a Fatalf:
// nats-server reports a listener it cannot bind, or JetStream that cannot
// start, only that way, and New waits for it.
func (a *slogAdapter) logf(level slog.Level, fatal bool, format string, v []any, attrs ...any) {
	msg := fmt.Sprintf(format, v...)
	if fatal && a.fatal != nil {
		select {
		case a.fatal <- msg:
		default: // the first one is the cause; later ones add nothing
		}
	}
	level, keep := natsLine(level, format)
	if !keep {
		return
	}
	a.l.Log(context.Background(), level, msg, attrs...)
}

// natsLine says at which level one of nats-server's lines is logged, and
// whether at all, judged by its format string (its wording is nats-server's
// own, and the format does not change with the values).
//
// Dropped: the lines of its startup banner that carry nothing but box and
// ASCII art (JetStream's logo, blank lines, rulers with or without a title,
// the documentation link under the logo), which in a journal or a JSON log
// are lines without a message. The settings listed between the rulers stay.
//
// Demoted to debug: "Address "0.0.0.0" can not be resolved properly", which
// it logs as an error at every start on a host whose only address is
// loopback (a container, a test): it then has no address to advertise to
// clients, which matters only to clients that follow advertised URLs, and
// the appliance's own clients do not.
func natsLine(level slog.Level, format string) (slog.Level, bool) {
	t := strings.TrimSpace(format)
	switch {
	case strings.HasPrefix(t, "Address %q can not be resolved"):
		return slog.LevelDebug, true
	case strings.HasPrefix(t, "https://docs.nats.io/"):
		return level, false
	case strings.HasPrefix(t, "---") && strings.HasSuffix(t, "---"):
		return level, false
	case !strings.ContainsFunc(t, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }):
		return level, false
	}
	return level, true
}
