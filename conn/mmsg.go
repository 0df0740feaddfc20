package conn

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvBatch is batchConn with its own recvmmsg: x/net's ReadBatch parses
// every message's source address into a new net.UDPAddr, an allocation per
// packet that connected tunnel sockets do not need. Headers are allocated
// once per socket; writes go to x/net.
type recvBatch struct {
	batchConn // WriteBatch
	rc        syscall.RawConn
	hs        [MaxBatch]unix.Mmsghdr
	iovs      [MaxBatch]unix.Iovec
	n, flags  int
	got       int
	errno     syscall.Errno
	recvFn    func(uintptr) // r.recv, bound once: no closure per call
}

func newRecvBatch(bc batchConn, rc syscall.RawConn) *recvBatch {
	r := &recvBatch{batchConn: bc, rc: rc}
	r.recvFn = r.recv
	return r
}

// ReadBatch reads up to len(ms) messages, each into its one buffer and its
// OOB; it sets N, NN and Flags (not Addr).
func (r *recvBatch) ReadBatch(ms []Message, flags int) (int, error) {
	n := min(len(ms), MaxBatch)
	for i := 0; i < n; i++ {
		m, h := &ms[i], &r.hs[i].Hdr
		if len(m.Buffers) != 1 || len(m.Buffers[0]) == 0 {
			return r.batchConn.ReadBatch(ms, flags) // not the shape l2tpu reads in
		}
		r.iovs[i].Base = &m.Buffers[0][0]
		r.iovs[i].SetLen(len(m.Buffers[0]))
		h.Iov, h.Iovlen = &r.iovs[i], 1
		h.Name, h.Namelen, h.Flags = nil, 0, 0
		if len(m.OOB) > 0 {
			h.Control = &m.OOB[0]
			h.SetControllen(len(m.OOB))
		} else {
			h.Control, h.Controllen = nil, 0
		}
	}
	r.n, r.flags = n, flags
	if err := r.rc.Control(r.recvFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, r.errno
	}
	for i := 0; i < r.got; i++ {
		ms[i].N, ms[i].NN, ms[i].Flags, ms[i].Addr = int(r.hs[i].Len), int(r.hs[i].Hdr.Controllen), int(r.hs[i].Hdr.Flags), nil
	}
	return r.got, nil
}

func (r *recvBatch) recv(fd uintptr) {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])), uintptr(r.n), uintptr(r.flags), 0, 0)
		if e == unix.EINTR {
			continue
		}
		r.got, r.errno = int(n), e
		return
	}
}
