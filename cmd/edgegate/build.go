package main

import "runtime/debug"

// buildCommit is the commit the binary was built from: the one given with
// -ldflags -X main.commit, else the one the Go build information records,
// else "unknown".
func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
