//go:build !linux

package parser

import (
	"os"
	"syscall"
)

func childAttr() *syscall.SysProcAttr { return nil }

// killGroup kills p only: elsewhere than on Linux children get no process
// group of their own.
func killGroup(p *os.Process) { p.Kill() }
