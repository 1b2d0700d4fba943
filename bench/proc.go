package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTick = 100

// procCPU returns the CPU time (user + system) pid used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// procRSS returns the resident set size of pid in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "123456 kB"
			if len(f) == 2 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("bench: /proc/%d/status: no VmRSS", pid)
}

// cpuMeter measures a process's CPU use over an interval.
type cpuMeter struct {
	pid   int
	cpu0  time.Duration
	wall0 time.Time
}

func startCPU(pid int) cpuMeter {
	c, _ := procCPU(pid)
	return cpuMeter{pid: pid, cpu0: c, wall0: time.Now()}
}

// cores is the CPU time used since start divided by the wall time: 1.0
// is one core busy all the time; -1 when it cannot be read.
func (m cpuMeter) cores() float64 {
	c, err := procCPU(m.pid)
	wall := time.Since(m.wall0)
	if err != nil || wall <= 0 {
		return -1
	}
	return float64(c-m.cpu0) / float64(wall)
}
