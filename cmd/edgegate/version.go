package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/urfave/cli/v2"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the commit and the versions of the parts",
		Action: func(c *cli.Context) error {
			w := c.App.Writer
			commit, modified := commit, ""
			if commit == "" {
				commit = "unknown"
			}
			var deps []*debug.Module
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					switch s.Key {
					case "vcs.revision":
						if commit == "unknown" {
							commit = s.Value
						}
					case "vcs.modified":
						if s.Value == "true" {
							modified = " (modified)"
						}
					}
				}
				deps = bi.Deps
			}
			fmt.Fprintf(w, "edgegate %s\n", version)
			fmt.Fprintf(w, "commit      %s%s\n", commit, modified)
			fmt.Fprintf(w, "go          %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			fmt.Fprintf(w, "nats-server %s\n", server.VERSION)
			for _, d := range deps {
				switch d.Path {
				case "github.com/nats-io/nats.go", "github.com/redis/go-redis/v9", "github.com/urfave/cli/v2":
					fmt.Fprintf(w, "%-11s %s (%s)\n", "", d.Version, d.Path)
				}
			}
			return nil
		},
	}
}
