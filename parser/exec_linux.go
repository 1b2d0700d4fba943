package parser

import "syscall"

// childAttr makes the kernel kill an exec child when the appliance dies
// (even by SIGKILL), so that no child goes on working for a dead parser.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
