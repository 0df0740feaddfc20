// Package memq is the queue behind the in-memory devices and sockets of
// tap/taptest and conn/conntest: packets waiting to be read, and an eventfd
// that polls readable while any wait, as a device's or socket's fd does
// for the data path's epoll.
package memq

import (
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Queue holds packets until they are read. The zero value is not usable:
// New makes one.
type Queue struct {
	mu     sync.Mutex
	efd    int
	items  [][]byte
	limit  int
	pushed uint64
	closed bool
}

// New is an empty queue of at most limit packets (more are dropped, as a
// full socket buffer drops).
func New(limit int) (*Queue, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	return &Queue{efd: efd, limit: limit}, nil
}

// FD polls readable while a packet waits.
func (q *Queue) FD() int { return q.efd }

// Push queues copies of ps and returns how many it took.
func (q *Queue) Push(ps ...[]byte) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0
	}
	was, n := len(q.items), 0
	for _, p := range ps {
		if len(q.items) >= q.limit {
			break
		}
		q.items = append(q.items, append([]byte(nil), p...))
		n++
	}
	q.pushed += uint64(n)
	if was == 0 && len(q.items) > 0 {
		unix.Write(q.efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
	return n
}

// Read moves up to len(bufs) packets into bufs[i][offset:], their lengths
// into sizes, without blocking; a packet longer than its buffer is
// dropped. After Close it returns os.ErrClosed.
func (q *Queue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, os.ErrClosed
	}
	n := 0
	for n < len(bufs) && len(q.items) > 0 {
		p := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		if len(p) > len(bufs[n])-offset {
			continue
		}
		sizes[n] = copy(bufs[n][offset:], p)
		n++
	}
	if len(q.items) == 0 {
		var b [8]byte
		unix.Read(q.efd, b[:]) // polls readable no more
	}
	return n, nil
}

// Pop is the next packet, waiting up to timeout for one.
func (q *Queue) Pop(timeout time.Duration) ([]byte, bool) {
	deadline := time.Now().Add(timeout)
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			p := q.items[0]
			q.items = q.items[1:]
			if len(q.items) == 0 {
				var b [8]byte
				unix.Read(q.efd, b[:])
			}
			q.mu.Unlock()
			return p, true
		}
		closed := q.closed
		q.mu.Unlock()
		left := time.Until(deadline)
		if closed || left <= 0 {
			return nil, false
		}
		unix.Poll([]unix.PollFd{{Fd: int32(q.efd), Events: unix.POLLIN}}, int(min(left, 10*time.Millisecond)/time.Millisecond)+1)
	}
}

// Pushed is how many packets Push ever took.
func (q *Queue) Pushed() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushed
}

// Len is how many packets wait.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Wait returns when a packet waits, or os.ErrClosed after Close.
func (q *Queue) Wait() error {
	for {
		q.mu.Lock()
		n, closed := len(q.items), q.closed
		q.mu.Unlock()
		switch {
		case closed:
			return os.ErrClosed
		case n > 0:
			return nil
		}
		unix.Poll([]unix.PollFd{{Fd: int32(q.efd), Events: unix.POLLIN}}, 10)
	}
}

// Close drops what waits and closes the eventfd (its pollers must have
// let go of it).
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return os.ErrClosed
	}
	q.closed, q.items = true, nil
	return unix.Close(q.efd)
}
