package main

import (
	_ "embed"
	"fmt"

	"github.com/urfave/cli/v2"
)

// manDescription is the manual page's DESCRIPTION: what the command
// definitions do not say (the files, the service, where the rest is).
// Only the manual page shows it; --help stays short.
const manDescription = `edgegate runs an IoT edge gateway appliance (**edgegate run**) and the tools around it: simulated devices, the parsed output, the cluster's status, device enrolment. Every setting of **run** is a flag with its dotted name (--devices.listen), a variable (EDGEGATE_DEVICES_LISTEN) and a key of the YAML file given with --config; precedence flag > variable > file > default.

The Debian package runs it as the systemd service edgegate.service, with the configuration /etc/edgegate/edgegate.yaml, extra options in /etc/default/edgegate, device tokens in /etc/edgegate/devices.tokens (**edgegate devices add** *id* enrols a device) and its state in /var/lib/edgegate. By default devices connect on port 7400, NATS clients on 127.0.0.1:4222, and http://127.0.0.1:7480/ serves the status page, /metrics, /healthz and /readyz.

The documentation is in /usr/share/doc/edgegate (README.md, and docs/ for installation, configuration, clustering, security, devices and the protocol); Prometheus alert rules and a Grafana dashboard are in /usr/share/edgegate.`

// manCommand prints the manual page, generated from the command
// definitions so that it never drifts from them; the package build runs it
// (packaging/docs.go). Hidden: it is for the package, not for a person.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the manual page (troff), generated from the commands and flags",
		Hidden: true,
		Action: func(c *cli.Context) error {
			app := *c.App // a copy: the description is the manual page's alone
			app.Description = manDescription
			page, err := app.ToManWithSection(1)
			if err != nil {
				return fmt.Errorf("man: %w", err)
			}
			_, err = fmt.Fprint(c.App.Writer, page)
			return err
		},
	}
}

// bashCompletion is urfave/cli's bash completion script
// (autocomplete/bash_autocomplete) for the program edgegate: it asks
// edgegate itself for the words (EnableBashCompletion).
//
//go:embed completion.bash
var bashCompletion string

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script: source <(edgegate completion bash)",
		ArgsUsage: "bash",
		Description: "The Debian package installs it as /usr/share/bash-completion/completions/edgegate. " +
			"Only bash is supported.",
		Action: func(c *cli.Context) error {
			if shell := c.Args().First(); shell != "bash" {
				return fmt.Errorf("completion: %q: only bash is supported (edgegate completion bash)", shell)
			}
			_, err := fmt.Fprint(c.App.Writer, bashCompletion)
			return err
		},
	}
}
