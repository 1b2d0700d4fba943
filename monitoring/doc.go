// Package monitoring holds what the package ships for watching edgegate
// from outside: Prometheus alert rules (edgegate.rules.yml, with their
// promtool unit tests) and a Grafana dashboard (grafana-dashboard.json),
// installed under /usr/share/edgegate. Its tests check them against the
// metrics a running appliance serves.
package monitoring
