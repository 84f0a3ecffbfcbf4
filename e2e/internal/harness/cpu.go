package harness

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/PID/stat times (sysconf(_SC_CLK_TCK) is
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// procStat is what CPU accounting needs from /proc/PID/stat.
type procStat struct {
	pgrp                         int
	utime, stime, cutime, cstime int64
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	// Fields after "(comm)": state ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime ...
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return procStat{}, false
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
	return procStat{pgrp: int(n(2)), utime: n(11), stime: n(12), cutime: n(13), cstime: n(14)}, true
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// groupCPU is the CPU time (user+system) used so far by the live
// processes of a process group and the children they have reaped.
func groupCPU(pgid int) time.Duration {
	var ticks int64
	for _, pid := range allPIDs() {
		if st, ok := readStat(pid); ok && st.pgrp == pgid {
			ticks += st.utime + st.stime + st.cutime + st.cstime
		}
	}
	return time.Duration(ticks) * clockTick
}

// CPU is the CPU time the running daemon and its plugins have used.
func (s *Smsmilter) CPU() time.Duration {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil || p.exited() {
		return 0
	}
	return groupCPU(p.cmd.Process.Pid)
}

// PID is the running daemon's process ID (0 when stopped), e.g. for perf.
func (s *Smsmilter) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// CPU is the CPU time the instance has used: its live processes, plus the
// exited ones master has reaped.
func (p *Postfix) CPU() time.Duration {
	var ticks int64
	for _, pid := range p.processes() {
		if st, ok := readStat(pid); ok {
			ticks += st.utime + st.stime + st.cutime + st.cstime
		}
	}
	return time.Duration(ticks) * clockTick
}

// CPU is the CPU time smtp-sink has used.
func (s *Sink) CPU() time.Duration {
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return groupCPU(s.proc.cmd.Process.Pid)
}
