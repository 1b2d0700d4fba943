package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShippedBinaryLeavesOutBench: the binary the package ships carries
// the appliance and its tools, not the benchmarks (cmd/edgegate-bench)
// nor what only they need: the chart library and the peer's consumer
// groups.
func TestShippedBinaryLeavesOutBench(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/edgegate/edgegate/bench", "gonum.org/v1/plot", "github.com/synadia-io/orbit.go/pcgroups"} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("cmd/edgegate imports %s", dep)
			}
		}
	}
}
