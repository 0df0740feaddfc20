// Package rtsched gives the calling thread a realtime scheduling policy
// (SCHED_FIFO). The goroutine has the thread to itself
// (runtime.LockOSThread), or the policy would go with the thread to
// others.
package rtsched

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Realtime gives the calling thread SCHED_FIFO at prio.
func Realtime(prio int) error {
	a := &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	if err := setattr(0, a); err != nil {
		return fmt.Errorf("sched_setattr SCHED_FIFO %d: %w", prio, err)
	}
	return nil
}

// setattr is sched_setattr(2), which never blocks: a raw system call.
func setattr(tid int, a *unix.SchedAttr) error {
	_, _, e := unix.RawSyscall(unix.SYS_SCHED_SETATTR, uintptr(tid), uintptr(unsafe.Pointer(a)), 0)
	if e != 0 {
		return e
	}
	return nil
}
