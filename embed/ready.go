package embed

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyPoll is how long each readiness check may take: the longest a fatal
// error waits before New returns it.
const readyPoll = 100 * time.Millisecond

// waitReady waits until ns accepts connections, or returns nats-server's own
// fatal error as soon as it reports one (a listener it cannot bind,
// JetStream that cannot start in its store directory). nats-server reports
// those only through its logger's Fatalf, and ReadyForConnections alone
// would wait out the whole timeout without saying why.
func waitReady(ns *server.Server, cfg Config, fatal <-chan string) error {
	deadline := time.Now().Add(cfg.ReadyTimeout)
	for {
		ready := ns.ReadyForConnections(readyPoll)
		select {
		case msg := <-fatal:
			if cfg.JetStream && strings.Contains(msg, "JetStream") {
				// nats-server's message does not name the directory.
				msg += " (store directory " + filepath.Join(cfg.StoreDir, "jetstream") + ")"
			}
			return fmt.Errorf("embed: nats-server: %s", msg)
		default:
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embed: NATS server not ready within %v%s", cfg.ReadyTimeout, listeners(cfg))
		}
	}
}

// listeners names the addresses the server was to listen on, for a timeout
// that had no fatal error to report.
func listeners(cfg Config) string {
	var l []string
	if cfg.Listen != "" {
		l = append(l, "nats.listen "+cfg.Listen)
	}
	if cfg.Cluster.Listen != "" {
		l = append(l, "nats.cluster.listen "+cfg.Cluster.Listen)
	}
	if len(l) == 0 {
		return ""
	}
	return " (listening on " + strings.Join(l, " and ") + ")"
}
