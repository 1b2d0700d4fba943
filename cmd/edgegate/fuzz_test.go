package main

import (
	"os"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/appliance"
)

// FuzzConfigFile feeds arbitrary YAML to the configuration loader: it
// never panics, an error names the file, and a configuration it accepts
// either validates or is refused by Validate with an error naming a
// setting.
func FuzzConfigFile(f *testing.F) {
	shipped, err := os.ReadFile("../../packaging/deb/edgegate.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shipped)
	f.Add([]byte("devices:\n  listen: 127.0.0.1:7400\n  max_frame: 64KiB\nlease:\n  ttl: 2s\n"))
	f.Add([]byte("nats:\n  cluster:\n    peers: [a:6222, b:6222]\n"))
	f.Add([]byte("parser: {exec: [/bin/cat, -u], workers: 0}\n"))
	f.Add([]byte("devices: 3\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("devices:\n  max_frame: 99999999999999999999\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg := appliance.DefaultConfig()
		if err := applyYAML(&cfg, "fuzz.yaml", in); err != nil {
			if !strings.HasPrefix(err.Error(), "config fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil && !strings.HasPrefix(err.Error(), "config: ") {
			t.Fatalf("validation error does not name a setting: %v", err)
		}
	})
}
