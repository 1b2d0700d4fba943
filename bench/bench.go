// Package bench measures edgegate against the machine's ceilings, the
// seed's one-message-per-lock scheme and a JetStream partitioned consumer
// group peer, on one workload: controllers that each send an ordered
// stream of messages, handled strictly in order per controller.
package bench

import (
	"time"
)

// Workload is what every contender is asked to do.
type Workload struct {
	// Controllers each send Messages messages of Size bytes, in order.
	Controllers, Messages, Size int
	// Window is the most unacknowledged messages per controller.
	Window int
	// Workers is the number of handler goroutines (parser workers, group
	// members' workers).
	Workers int
}

// Result is one measured run.
type Result struct {
	Scenario    string        `json:"scenario"`
	Controllers int           `json:"controllers"`
	Messages    int64         `json:"messages"` // handled and acknowledged
	Elapsed     time.Duration `json:"elapsed_ns"`
	Rate        float64       `json:"rate"` // messages per second
	// Latency from send to acknowledgement; zero when not measured.
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	// SockP50 and SockP99 end at the kernel's receive time of the ACK on
	// the device's socket instead of the device's reader (see
	// device.SimReport): without the simulated devices' own wait for a
	// CPU. Zero when not measured.
	SockP50 time.Duration `json:"sock_p50_ns,omitempty"`
	SockP99 time.Duration `json:"sock_p99_ns,omitempty"`
	// OwnP50 and OwnP99 are the appliance's own share of the latency, by
	// its edgegate_ack_latency_seconds histogram: per batch, from reading
	// its first message to queueing its ACKs (what the devices see adds
	// their wait for the appliance to read and their own read of the
	// ACKs). Zero when not measured.
	OwnP50 time.Duration `json:"own_p50_ns,omitempty"`
	OwnP99 time.Duration `json:"own_p99_ns,omitempty"`
	// Procs is the GOMAXPROCS the appliance ran with (a child process; 0:
	// not known).
	Procs int `json:"procs,omitempty"`
	// RunWait is how long a goroutine of the appliance that became
	// runnable waited for a CPU, on average over the run (the Go
	// scheduler's latency); LockWaiters is how many of its goroutines
	// waited for a lock, on average (seconds of lock wait per second).
	// What the devices see beyond the appliance's own share waits on the
	// one, and its own share on both. Zero when not measured.
	RunWait     time.Duration `json:"run_wait_ns,omitempty"`
	LockWaiters float64       `json:"lock_waiters,omitempty"`
	// CPU is the CPU time of the measured process over the run divided by
	// the elapsed time (2.0 = two cores busy); negative when not measured.
	CPU float64 `json:"cpu"`
	// RSS is the measured process's resident set at the end of the run in
	// bytes; negative when not measured.
	RSS int64 `json:"rss"`
	// Note says what the figure includes or leaves out.
	Note string `json:"note,omitempty"`
}
