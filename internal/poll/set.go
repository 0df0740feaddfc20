package poll

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Set is an epoll set of fds, each with a token, that one goroutine waits
// on: a loop of the dataplane over ready devices. It is level-triggered, so
// an fd that still has data after its turn is reported again in the next
// round; epoll hands ready fds out in the order they became ready and puts
// each at the back once reported, which is the round-robin the loop wants.
//
// A goroutine waits parked: the set's own fd sits in the Go runtime's
// poller (an epoll fd is readable while it has ready fds), so no thread is
// held, and the runtime runs the goroutine on whichever thread polled.
type Set struct {
	epfd   int
	f      *os.File
	rc     syscall.RawConn
	evs    []unix.EpollEvent
	n      int
	errno  syscall.Errno
	waitFn func(uintptr) bool
	nowFn  func(uintptr) // never blocking
}

// NewSet makes an empty set that reports up to max fds per Ready.
func NewSet(max int) (*Set, error) {
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
	s := &Set{epfd: fd, f: f, rc: rc, evs: make([]unix.EpollEvent, max)}
	s.waitFn = func(fd uintptr) bool { s.poll(fd); return s.n > 0 || s.errno != 0 }
	s.nowFn = func(fd uintptr) { s.poll(fd) }
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
// there is one, or the set is closed (os.ErrClosed).
func (s *Set) Ready(block bool, toks []int32) ([]int32, error) {
	var err error
	if block {
		err = s.rc.Read(s.waitFn)
	} else {
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

// poll is epoll_wait without blocking: a raw system call (see tap's
// readOne for why).
func (s *Set) poll(fd uintptr) {
	ev := uintptr(unsafe.Pointer(&s.evs[0]))
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, ev, uintptr(len(s.evs)), 0, 0, 0)
		if e == unix.EINTR {
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
