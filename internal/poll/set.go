package poll

import (
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Set is an epoll set of fds, each with a token, that one goroutine waits
// on: a loop of the dataplane over ready devices. It is level-triggered, so
// an fd that still has data after its turn is reported again in the next
// round; epoll hands ready fds out in the order they became ready and puts
// each at the back once reported, which is the round-robin the loop wants.
//
// A goroutine waits in one of two ways. Parked (the default), the set's own
// fd sits in the Go runtime's poller (an epoll fd is readable while it has
// ready fds): no thread is held, and the runtime runs the goroutine on
// whichever thread polled. In its thread (inThread), it blocks in
// epoll_wait itself, keeping its P, so that the kernel wakes that very
// thread, with its own scheduling policy, and the goroutine runs at once:
// for at most ThreadWait, after which the caller is to let the runtime
// schedule.
type Set struct {
	epfd     int
	f        *os.File
	rc       syscall.RawConn
	evs      []unix.EpollEvent
	n        int
	errno    syscall.Errno
	inThread bool
	waitFn   func(uintptr) bool
	pollFn   func(uintptr) // blocking when inThread
	nowFn    func(uintptr) // never blocking
}

// ThreadWait is the longest an in-thread Ready blocks.
const ThreadWait = 4 * time.Millisecond

// NewSet makes an empty set that reports up to max fds per Ready; with
// inThread, Ready blocks its caller's thread.
func NewSet(max int, inThread bool) (*Set, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("poll: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("poll: epoll fd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &Set{epfd: fd, f: f, rc: rc, evs: make([]unix.EpollEvent, max), inThread: inThread}
	s.waitFn = func(fd uintptr) bool { s.poll(fd, false); return s.n > 0 || s.errno != 0 }
	s.pollFn = func(fd uintptr) { s.poll(fd, s.inThread) }
	s.nowFn = func(fd uintptr) { s.poll(fd, false) }
	return s, nil
}

// Add watches fd for readability; Ready reports it as token.
func (s *Set) Add(fd int, token int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: token}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("poll: watch fd %d: %w", fd, err)
	}
	return nil
}

// Del stops watching fd. It must come before fd is closed: the kernel
// drops an fd from the set only when its last reference goes.
func (s *Set) Del(fd int) error {
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("poll: unwatch fd %d: %w", fd, err)
	}
	return nil
}

// Ready appends the tokens of the fds ready now (errors and hang-ups
// count: reading reports them) to toks. With block it first waits until
// there is one, or the set is closed (os.ErrClosed; a set waited on in its
// thread must be woken by one of its fds first).
func (s *Set) Ready(block bool, toks []int32) ([]int32, error) {
	var err error
	switch {
	case block && !s.inThread:
		err = s.rc.Read(s.waitFn)
	case block:
		err = s.rc.Control(s.pollFn)
	default:
		err = s.rc.Control(s.nowFn)
	}
	if err != nil {
		return toks, err
	}
	if s.errno != 0 {
		return toks, fmt.Errorf("poll: epoll_wait: %w", s.errno)
	}
	for _, ev := range s.evs[:s.n] {
		toks = append(toks, ev.Fd)
	}
	return toks, nil
}

// poll is epoll_wait, blocking or not. Not blocking it is a raw system
// call (see tap's readOne for why); blocking it goes through the runtime,
// which lends the goroutine's P to others while the thread sleeps.
func (s *Set) poll(fd uintptr, block bool) {
	ev := uintptr(unsafe.Pointer(&s.evs[0]))
	for {
		var n uintptr
		var e syscall.Errno
		if block {
			// Raw: the goroutine keeps its P while the thread sleeps,
			// so that it runs the moment the kernel wakes the thread.
			// For at most ThreadWait: the runtime preempts a goroutine
			// that has not let it schedule for 10 ms.
			n, _, e = unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, ev, uintptr(len(s.evs)), uintptr(ThreadWait.Milliseconds()), 0, 0)
		} else {
			n, _, e = unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, ev, uintptr(len(s.evs)), 0, 0, 0)
		}
		if e == unix.EINTR {
			if block {
				// Perhaps the runtime asking the goroutine to stop (a
				// collection): return, as after a timeout, to Go code
				// where it can.
				s.n, s.errno = 0, 0
				return
			}
			continue
		}
		s.n, s.errno = int(n), e
		if e != 0 {
			s.n = 0
		}
		return
	}
}

// Close ends the set; a parked Ready returns os.ErrClosed.
func (s *Set) Close() error { return s.f.Close() }
