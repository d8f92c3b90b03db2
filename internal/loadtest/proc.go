package loadtest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const clockTick = 100

// ProcCPU is the user+system CPU time a process has used so far, read from
// /proc/<pid>/stat (10 ms resolution).
func ProcCPU(pid int) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	// Fields after the command: state(3) ... utime(14) stime(15).
	ut, err1 := strconv.ParseInt(string(f[14-3]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[15-3]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime/stime are not numbers", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// ProcRSS is the resident set size of a process in bytes (/proc/<pid>/stat).
func ProcRSS(pid int) (int64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	pages, err := strconv.ParseInt(string(f[24-3]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: rss is not a number", pid)
	}
	return pages * int64(os.Getpagesize()), nil
}

// procStat returns the fields of /proc/<pid>/stat from the state (field 3) on.
func procStat(pid int) ([][]byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, fmt.Errorf("read CPU of process %d: %w", pid, err)
	}
	// The command (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return nil, fmt.Errorf("/proc/%d/stat is malformed", pid)
	}
	f := bytes.Fields(b[i+2:])
	if len(f) < 24-3+1 {
		return nil, fmt.Errorf("/proc/%d/stat has %d fields after the command", pid, len(f))
	}
	return f, nil
}

// SelfCPU is the user+system CPU this process has used so far (getrusage).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// SelfRSS is this process's resident set size in bytes.
func SelfRSS() int64 {
	n, _ := ProcRSS(os.Getpid())
	return n
}
