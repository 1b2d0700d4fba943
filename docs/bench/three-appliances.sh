#!/bin/bash
# Three appliances on one box, clustered, with Redis leases and R3
# streams; edgegate simulate spreads the devices over their device ports.
# usage: three-appliances.sh <edgegate binary> [controllers] [messages each]
# Ports 6390 (Redis), 7501-7503, 4301-4303, 6301-6303, 7581-7583 must be free.
set -u
exe=$1 ctl=${2:-100} msgs=${3:-5000}
d=$(mktemp -d /tmp/three.XXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
redis-server --port 6390 --save "" --appendonly no >"$d/redis.log" 2>&1 &
for i in 0 1 2; do
	"$exe" run --name "gw-$i" --data_dir "$d/gw-$i" --devices.listen "127.0.0.1:$((7501 + i))" \
		--nats.listen "127.0.0.1:$((4301 + i))" --http.listen "127.0.0.1:$((7581 + i))" \
		--nats.cluster.listen "127.0.0.1:$((6301 + i))" \
		--nats.cluster.peers 127.0.0.1:6301,127.0.0.1:6302,127.0.0.1:6303 \
		--nats.cluster.user bench --nats.cluster.password bench \
		--lease.redis redis://127.0.0.1:6390/0 >"$d/gw-$i.log" 2>&1 &
done
for _ in $(seq 120); do # every appliance ready, within a minute
	ready=0
	for i in 0 1 2; do curl -sf -o /dev/null "http://127.0.0.1:$((7581 + i))/readyz" && ready=$((ready + 1)); done
	[ "$ready" = 3 ] && break
	sleep 0.5
done
# A lease store up for less than a lease (lease.ttl, 5 s) may have lost
# leases some parser still works under, so the appliances hold back
# their first batches until it is (docs/design.md, "Epochs and the
# pause"). Redis starts with this script; the devices start once it has
# been up longer, as on a box where it runs before the appliances.
for _ in $(seq 40); do
	up=$(redis-cli -p 6390 info server | tr -d '\r' | awk -F: '/^uptime_in_seconds:/ {print $2}')
	[ "${up:-0}" -ge 6 ] && break
	sleep 0.25
done
"$exe" simulate --addr 127.0.0.1:7501 --addr 127.0.0.1:7502 --addr 127.0.0.1:7503 \
	--controllers "$ctl" --messages "$msgs" --prefix three-
