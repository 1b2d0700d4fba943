package appliance

import (
	"context"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Under systemd (Type=notify) the appliance says READY=1 once NATS, the
// lease store, the parser pool and the listeners serve, feeds the watchdog
// (WatchdogSec=) while check passes, and says STOPPING=1 when it begins to
// stop. Outside systemd (no NOTIFY_SOCKET) these do nothing.

func (a *Appliance) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		a.log.Warn("appliance: sd_notify", "state", state, "err", err)
	}
}

// watchdogLoop sends WATCHDOG=1 at a third of the watchdog interval while
// the appliance is healthy. When it is not, the pings stop and systemd
// restarts the service once the interval passes.
func (a *Appliance) watchdogLoop(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.check(); err != nil {
			if !failing {
				a.log.Error("appliance: unhealthy, not feeding the systemd watchdog", "err", err, "watchdog", interval)
			}
			failing = true
			continue
		}
		if failing {
			a.log.Info("appliance: healthy again")
		}
		failing = false
		a.notify(daemon.SdNotifyWatchdog)
	}
}
