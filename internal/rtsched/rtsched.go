// Package rtsched sets how the kernel schedules the calling thread:
// realtime (SCHED_FIFO) at a priority, or ordinary (SCHED_NORMAL) at a nice
// value. The caller has locked its goroutine to the thread
// (runtime.LockOSThread), or the policy would go with the thread to other
// goroutines.
package rtsched

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Realtime gives the calling thread SCHED_FIFO at prio.
func Realtime(prio int) error {
	a := &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	if err := unix.SchedSetAttr(0, a, 0); err != nil {
		return fmt.Errorf("sched_setattr SCHED_FIFO %d: %w", prio, err)
	}
	return nil
}

// Ordinary gives the calling thread SCHED_NORMAL at nice.
func Ordinary(nice int) error { return ordinary(0, nice) }

// OrdinaryThread gives thread tid SCHED_NORMAL at nice 0.
func OrdinaryThread(tid int) error { return ordinary(tid, 0) }

func ordinary(tid, nice int) error {
	a := &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL, Nice: int32(nice)}
	if err := unix.SchedSetAttr(tid, a, 0); err != nil {
		return fmt.Errorf("sched_setattr nice %d: %w", nice, err)
	}
	return nil
}
