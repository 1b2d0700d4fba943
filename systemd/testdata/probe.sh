#!/bin/sh
# Runs inside the booted guest (probe.service) and writes one line per
# check to /probe.result: "OK ..." or "FAIL ...". Then the guest powers off.
exec > /probe.result 2>&1
ok() { echo "OK $*"; }
bad() { echo "FAIL $*"; }
# Up to 70 s: longer than the unit's TimeoutStartSec (60 s), so that a slow
# start on a loaded machine shows as systemd's verdict, not the probe's.
wait_active() {
	for i in $(seq 1 350); do systemctl is-active -q edgegate && return 0; sleep 0.2; done
	return 1
}
since() { echo "$(( $(date +%s%N) / 1000000 - $1 )) ms"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
restarts() { systemctl show -p NRestarts --value edgegate; }

t0=$(now_ms)
wait_active && ok "active (Type=notify reached READY=1), waited $(since $t0)" || bad "not active after $(since $t0): $(systemctl is-active edgegate)"
curl -sf http://127.0.0.1:7480/readyz >/dev/null && ok "readyz" || bad "readyz"
# The simulated devices' token was added to the package's token file
# before the boot (devices authenticate by default).
if edgegate simulate --controllers 5 --messages 200 --token probe-token >/tmp/sim 2>&1; then
	ok "simulate: $(grep acked /tmp/sim)"
else
	bad "simulate"; cat /tmp/sim
fi

# The watchdog: with WatchdogSec=2s, a stopped (SIGSTOP) process is killed
# and restarted by systemd.
mkdir -p /run/systemd/system/edgegate.service.d
printf '[Service]\nWatchdogSec=2s\n' > /run/systemd/system/edgegate.service.d/watchdog.conf
systemctl daemon-reload
t0=$(now_ms)
systemctl restart edgegate
wait_active || bad "not active $(since $t0) after restart: $(systemctl is-active edgegate)"
n0=$(restarts)
pid=$(systemctl show -p MainPID --value edgegate)
kill -STOP "$pid"
for i in $(seq 1 100); do [ "$(restarts)" -gt "$n0" ] && break; sleep 0.2; done
if [ "$(restarts)" -gt "$n0" ] && wait_active && [ "$(systemctl show -p MainPID --value edgegate)" != "$pid" ]; then
	ok "watchdog: the stopped process was restarted"
else
	bad "watchdog: restarts $(restarts) (before $n0), state $(systemctl is-active edgegate)"
fi
curl -sf http://127.0.0.1:7480/readyz >/dev/null && ok "readyz after the watchdog restart" || bad "readyz after the watchdog restart"

# A reload checks the configuration first: a broken file is refused by
# systemctl reload itself, and the service runs on.
cp /etc/edgegate/edgegate.yaml /tmp/edgegate.yaml.good
echo 'devices: [' >>/etc/edgegate/edgegate.yaml
pid=$(systemctl show -p MainPID --value edgegate)
if systemctl reload edgegate 2>/tmp/reload; then
	bad "reload took a broken configuration"
elif systemctl is-active -q edgegate && [ "$(systemctl show -p MainPID --value edgegate)" = "$pid" ]; then
	ok "reload refused a broken configuration, the service runs on"
else
	bad "reload of a broken configuration: state $(systemctl is-active edgegate)"; cat /tmp/reload
fi
cp /tmp/edgegate.yaml.good /etc/edgegate/edgegate.yaml
systemctl reload edgegate && ok "reload" || bad "reload of the good configuration"

systemctl stop edgegate
r=$(systemctl show -p Result --value edgegate)
[ "$r" = success ] && ok "clean stop" || bad "stop: result $r"
echo "--- journal"
journalctl -b -u edgegate --no-pager | tail -30
