package socket

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the socket's histograms; its counters come from Stats.
type metrics struct {
	batchSize  prometheus.Histogram
	queueWait  prometheus.Histogram
	ackLatency prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgegate_batch_size", Help: "Messages per assignment handed to a parser.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
		}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgegate_dispatch_wait_seconds", Help: "Time from reading a batch's first message to handing the batch to a parser.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10),
		}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgegate_ack_latency_seconds", Help: "Time from reading a batch's first message to acknowledging it.",
			// Fine enough (a factor of 1.5) to tell 3 ms from 5 ms.
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 10, 31),
		}),
	}
}

// Collector returns the socket's metrics for a Prometheus registry.
func (s *Server) Collector() prometheus.Collector { return (*collector)(s) }

type collector Server

var (
	descConnected    = prometheus.NewDesc("edgegate_devices_connected", "Device connections open.", nil, nil)
	descQueued       = prometheus.NewDesc("edgegate_queue_messages", "Messages queued (including the batches in flight).", nil, nil)
	descInFlight     = prometheus.NewDesc("edgegate_batches_in_flight", "Controllers with a batch at a parser.", nil, nil)
	descControllers  = prometheus.NewDesc("edgegate_controllers", "Controllers this socket holds a session or messages of.", nil, nil)
	descPools        = prometheus.NewDesc("edgegate_parser_pools_known", "Parser pools of the cluster this socket knows.", nil, nil)
	descWriteQueued  = prometheus.NewDesc("edgegate_device_write_queued_bytes", "Bytes queued for writing to devices (ACKs, PONGs, ERRORs).", nil, nil)
	descOldest       = prometheus.NewDesc("edgegate_batch_oldest_seconds", "How long the batch in flight longest has been at its parser; 0 when none (a stuck controller shows here).", nil, nil)
	descProtoErrors  = prometheus.NewDesc("edgegate_protocol_errors_total", "Device connections closed with an EGP/1 ERROR, by code.", []string{"code"}, nil)
	socketCounterDef = []struct {
		name, help string
		get        func(*Stats) uint64
	}{
		{"edgegate_device_connections_refused_total", "Connections refused (limits, shutdown).", func(s *Stats) uint64 { return s.Refused }},
		{"edgegate_messages_received_total", "Messages read from devices.", func(s *Stats) uint64 { return s.Received }},
		{"edgegate_messages_acked_total", "Messages finished (acknowledged unless ack mode none).", func(s *Stats) uint64 { return s.Acked }},
		{"edgegate_messages_dead_lettered_total", "Messages dead-lettered.", func(s *Stats) uint64 { return s.DeadLettered }},
		{"edgegate_messages_duplicates_suppressed_total", "Duplicates of persistent-seq devices acknowledged without the handler.", func(s *Stats) uint64 { return s.Suppressed }},
		{"edgegate_messages_dropped_total", "Queued messages dropped because their session closed (the device resends them).", func(s *Stats) uint64 { return s.Dropped }},
		{"edgegate_session_takeovers_total", "Sessions taken over by a newer one.", func(s *Stats) uint64 { return s.Takeovers }},
		{"edgegate_batches_dispatched_total", "Assignments sent to parsers.", func(s *Stats) uint64 { return s.Batches }},
		{"edgegate_batches_redispatched_total", "Batches dispatched again after a lost lease or a dead parser.", func(s *Stats) uint64 { return s.Redispatched }},
		{"edgegate_assignments_busy_total", "Assignments a parser pool answered busy.", func(s *Stats) uint64 { return s.Busy }},
		{"edgegate_lease_acquired_total", "Leases granted.", func(s *Stats) uint64 { return s.Acquired }},
		{"edgegate_batches_continued_total", "Batches sent under the lease kept after the controller's previous batch (no acquire).", func(s *Stats) uint64 { return s.Continued }},
		{"edgegate_batches_direct_total", "Batches handed to the parser pool of this appliance directly, without NATS.", func(s *Stats) uint64 { return s.Direct }},
		{"edgegate_lease_held_total", "Acquisitions refused because another holder had the lease.", func(s *Stats) uint64 { return s.LeaseHeld }},
		{"edgegate_lease_store_errors_total", "Lease store errors (never taken as a dead parser).", func(s *Stats) uint64 { return s.StoreErrors }},
		{"edgegate_device_write_waits_total", "Times a device's reader stopped reading until the device took what was queued for it.", func(s *Stats) uint64 { return s.WriteWaits }},
		{"edgegate_dispatch_pauses_total", "Dispatch paused for a lease after the store lost leases.", func(s *Stats) uint64 { return s.Pauses }},
		{"edgegate_teltonika_imei_refused_total", "Teltonika devices answered 0x00: IMEI not on devices.teltonika_imeis.", func(s *Stats) uint64 { return s.Teltonika.IMEIRefused }},
		{"edgegate_teltonika_bad_handshakes_total", "Teltonika connections closed for a malformed or missing IMEI handshake.", func(s *Stats) uint64 { return s.Teltonika.BadHandshakes }},
		{"edgegate_teltonika_packets_refused_total", "Teltonika packets refused by the frame check (CRC, record counts, length): not acknowledged, nothing stored.", func(s *Stats) uint64 { return s.Teltonika.BadPackets }},
		{"edgegate_teltonika_packets_skipped_total", "Teltonika packets of codecs that carry no AVL records (GPRS command responses): not acknowledged, nothing stored.", func(s *Stats) uint64 { return s.Teltonika.Skipped }},
		{"edgegate_parser_pools_ignored_total", "Announcements of new parser pools ignored because the pool table was full.", func(s *Stats) uint64 { return s.PoolsIgnored }},
	}
	socketCounterDescs = func() []*prometheus.Desc {
		var d []*prometheus.Desc
		for _, c := range socketCounterDef {
			d = append(d, prometheus.NewDesc(c.name, c.help, nil, nil))
		}
		return d
	}()
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnected, descQueued, descInFlight, descControllers, descPools, descWriteQueued, descOldest, descProtoErrors} {
		ch <- d
	}
	for _, d := range socketCounterDescs {
		ch <- d
	}
	m := (*Server)(c).metrics
	m.batchSize.Describe(ch)
	m.queueWait.Describe(ch)
	m.ackLatency.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := (*Server)(c)
	st := s.Stats()
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, float64(st.Connections))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(st.Queued))
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(st.InFlight))
	ch <- prometheus.MustNewConstMetric(descControllers, prometheus.GaugeValue, float64(st.Controllers))
	ch <- prometheus.MustNewConstMetric(descPools, prometheus.GaugeValue, float64(st.Pools))
	ch <- prometheus.MustNewConstMetric(descWriteQueued, prometheus.GaugeValue, float64(st.WriteQueued))
	ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, st.OldestInFlight.Seconds())
	for code, n := range st.ProtocolErrors {
		ch <- prometheus.MustNewConstMetric(descProtoErrors, prometheus.CounterValue, float64(n), strconv.Itoa(int(code)))
	}
	for i, def := range socketCounterDef {
		ch <- prometheus.MustNewConstMetric(socketCounterDescs[i], prometheus.CounterValue, float64(def.get(&st)))
	}
	s.metrics.batchSize.Collect(ch)
	s.metrics.queueWait.Collect(ch)
	s.metrics.ackLatency.Collect(ch)
}
