package parser

import (
	"os"
	"syscall"
)

// childAttr makes the kernel kill an exec child when the appliance dies
// (even by SIGKILL), so that no child goes on working for a dead parser,
// and puts the child in a process group of its own: what it starts (a
// wrapper script's parser) is killed with it (killGroup).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// killGroup kills p's process group, whose leader p is (childAttr): a
// hung parser behind a wrapper script would otherwise live on, holding
// the pipes.
func killGroup(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		p.Kill()
	}
}
