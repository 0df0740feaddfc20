// Package rtsched sets a thread's scheduling policy: realtime (SCHED_FIFO)
// at a priority, or ordinary (SCHED_NORMAL). A goroutine that gives its
// own thread a realtime policy takes care that no other goroutine runs on
// the thread meanwhile. The calls never block: raw system calls, during
// which the runtime cannot move the goroutine to another thread.
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

// Ordinary gives the calling thread SCHED_NORMAL at nice 0.
func Ordinary() error { return OrdinaryThread(0) }

// OrdinaryThread gives thread tid (0: the calling one) SCHED_NORMAL at nice
// 0.
func OrdinaryThread(tid int) error {
	a := &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}
	if err := setattr(tid, a); err != nil {
		return fmt.Errorf("sched_setattr SCHED_NORMAL: %w", err)
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
