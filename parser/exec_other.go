//go:build !linux

package parser

import "syscall"

func childAttr() *syscall.SysProcAttr { return nil }
