package appliance

import (
	"cmp"
	"strings"
)

// Summary returns the effective configuration in brief, as key-value pairs
// for one log line at start: the listeners, the data directory, the lease
// store (a Redis URL without its password), the parser pool and the log.
func (c Config) Summary() []any {
	c = c.withDefaults()
	off := func(s string) string { return cmp.Or(s, "off") }
	store := "in-process"
	switch {
	case c.LeaseStore != nil:
		store = "custom"
	case c.Lease.Redis != "":
		store = "redis " + c.Lease.RedisMode
	}
	kv := []any{
		"name", c.Name,
		"data_dir", cmp.Or(c.DataDir, "auto"),
		"devices", off(c.Devices.Listen),
		"lines", off(c.Devices.LinesListen),
		"nats", cmp.Or(c.NATS.Listen, "in-process only"),
		"jetstream", c.NATS.JetStream,
		"cluster", off(c.NATS.Cluster.Listen),
	}
	if len(c.NATS.Cluster.Peers) > 0 {
		kv = append(kv, "peers", strings.Join(c.NATS.Cluster.Peers, ","))
	}
	kv = append(kv, "http", off(c.HTTP.Listen), "lease_store", store)
	if c.LeaseStore == nil && c.Lease.Redis != "" {
		kv = append(kv, "redis", redactURL(c.Lease.Redis))
	}
	handler := c.Parser.Handler
	if c.Handler != nil {
		handler = "custom"
	}
	kv = append(kv, "workers", c.Parser.Workers, "handler", handler)
	if c.Handler == nil && c.Parser.Handler == "exec" && len(c.Parser.Exec) > 0 {
		kv = append(kv, "exec", c.Parser.Exec[0])
	}
	return append(kv, "log_level", c.Log.Level, "log_format", c.Log.Format)
}
