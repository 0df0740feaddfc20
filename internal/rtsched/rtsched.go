// Package rtsched sets the scheduling policy of a process's threads:
// realtime (SCHED_FIFO) at a priority, or ordinary (SCHED_NORMAL). A Go
// program's goroutines move between its threads, so a policy meant for
// what goroutines do is one for every thread; threads made later inherit
// it from the thread that makes them (clone keeps the policy).
package rtsched

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Process gives every thread of the calling process SCHED_FIFO at prio, or
// with prio 0 SCHED_NORMAL at nice 0. The first thread it cannot change
// stops it with an error (EPERM without CAP_SYS_NICE or an RLIMIT_RTPRIO).
func Process(prio int) error {
	a := &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}
	if prio > 0 {
		a = &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	}
	// A thread made while the tasks are read may be made by one not yet
	// changed: read them again until a pass finds nothing new.
	done := map[int]bool{}
	for pass := 0; pass < 10; pass++ {
		d, err := os.Open("/proc/self/task")
		if err != nil {
			return fmt.Errorf("rtsched: %w", err)
		}
		names, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return fmt.Errorf("rtsched: %w", err)
		}
		changed := false
		for _, n := range names {
			tid, err := strconv.Atoi(n)
			if err != nil || done[tid] {
				continue
			}
			if err := setattr(tid, a); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("rtsched: sched_setattr %s %d on thread %d: %w", policy(prio), prio, tid, err)
			}
			done[tid], changed = true, true
		}
		if !changed {
			return nil
		}
	}
	return nil
}

// Thread reports the policy and realtime priority of thread tid.
func Thread(tid int) (fifo bool, prio int, err error) {
	var a unix.SchedAttr
	_, _, e := unix.RawSyscall6(unix.SYS_SCHED_GETATTR, uintptr(tid), uintptr(unsafe.Pointer(&a)), unix.SizeofSchedAttr, 0, 0, 0)
	if e != 0 {
		return false, 0, e
	}
	return a.Policy == unix.SCHED_FIFO, int(a.Priority), nil
}

func policy(prio int) string {
	if prio > 0 {
		return "SCHED_FIFO"
	}
	return "SCHED_NORMAL"
}

// setattr is sched_setattr(2), which never blocks: a raw system call.
func setattr(tid int, a *unix.SchedAttr) error {
	_, _, e := unix.RawSyscall(unix.SYS_SCHED_SETATTR, uintptr(tid), uintptr(unsafe.Pointer(a)), 0)
	if e != 0 {
		return e
	}
	return nil
}
