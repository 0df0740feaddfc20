package conn

import (
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvBatch is batchConn with its own recvmmsg and sendmmsg: x/net's
// ReadBatch parses every message's source address into a new net.UDPAddr,
// an allocation per packet that connected tunnel sockets do not need, and
// both go through the scheduler (Syscall) for calls that never block here,
// which wakes the runtime's monitor thread on an idle machine (see tap's
// readOne): these are raw system calls. Read headers are
// allocated once per socket, write headers pooled (writers may run
// concurrently).
type recvBatch struct {
	icmp      atomic.Uint64 // ICMP errors consumed by reads and sends (ICMPErrors)
	batchConn               // WriteBatch
	rc        syscall.RawConn
	hs        [MaxBatch]unix.Mmsghdr
	iovs      [MaxBatch]unix.Iovec
	n, flags  int
	got       int
	errno     syscall.Errno
	recvFn    func(uintptr) // r.recv, bound once: no closure per call
	// noICMP: no ICMP error ever reaches the socket (IPPROTO_RAW), so a
	// failed send's error is its own: never sent again.
	noICMP bool
	// errQueue: the socket queues its errors too (IPV6_RECVERR), held
	// against its receive buffer until read: emptied when one is seen.
	errQueue bool
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
		setControl(h, m.OOB)
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
	for retries := 0; ; {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])), uintptr(r.n), uintptr(r.flags), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if isReportedICMP(e) && retries < maxICMPRetries {
			// An error an ICMP message left on the socket, which this
			// read consumed instead of the datagrams waiting: count
			// it, read again.
			retries++
			r.icmp.Add(1)
			if r.errQueue {
				drainErrors(fd)
			}
			continue
		}
		r.got, r.errno = int(n), e
		return
	}
}

// sendHdrs are one sendmmsg's headers.
type sendHdrs struct {
	hs      [MaxBatch]unix.Mmsghdr
	iovs    [MaxBatch]unix.Iovec
	n       int
	got     int // messages sent so far
	errno   syscall.Errno
	blocked bool // the last try met a full send buffer
	retries int  // sends that failed with a socket error ICMP may have set
	icmp    *atomic.Uint64
	sendFn  func(uintptr) bool
	tryFn   func(uintptr)
}

var sendPool = sync.Pool{New: func() any {
	h := &sendHdrs{}
	h.sendFn = h.send
	h.tryFn = func(fd uintptr) { h.blocked = !h.send(fd) }
	return h
}}

// WriteBatch sends ms (Buffers and OOB; connected, so no Addr; flags are
// always MSG_DONTWAIT) by sendmmsg, waiting while the socket buffer is
// full; it returns how many were sent and, when not all were, the error
// of the first that was not.
func (r *recvBatch) WriteBatch(ms []Message, flags int) (int, error) {
	h := sendPool.Get().(*sendHdrs)
	defer sendPool.Put(h)
	n, k := min(len(ms), MaxBatch), 0
	for i := 0; i < n; i++ {
		m, hd := &ms[i], &h.hs[i].Hdr
		if len(m.Buffers) == 0 || k+len(m.Buffers) > len(h.iovs) || m.Addr != nil {
			clear(h.iovs[:k])
			return r.batchConn.WriteBatch(ms, flags) // not the shape l2tpu writes
		}
		hd.Iov, hd.Iovlen = &h.iovs[k], 0
		for _, b := range m.Buffers {
			if len(b) > 0 {
				h.iovs[k].Base = &b[0]
				h.iovs[k].SetLen(len(b))
				k++
				hd.Iovlen++
			}
		}
		setControl(hd, m.OOB)
	}
	h.n, h.got, h.errno, h.retries, h.icmp = n, 0, 0, 0, &r.icmp
	if r.noICMP {
		h.retries = maxICMPRetries
	}
	// Through the fd's reference, not its write lock: senders of
	// several sessions (threads) share a tunnel's socket, and one that
	// the kernel preempts in sendmmsg must not hold the others. Only a
	// full send buffer waits, with the lock, until the socket is
	// writable.
	h.blocked = false
	err := r.rc.Control(h.tryFn)
	if err == nil && h.blocked {
		err = r.rc.Write(h.sendFn)
	}
	clear(h.iovs[:k]) // keep no references to the caller's buffers
	for i := 0; i < h.got; i++ {
		ms[i].N = int(h.hs[i].Len)
	}
	if h.got < n {
		if err == nil {
			err = h.errno
		}
		return h.got, err
	}
	return h.got, nil
}

// send is sendmmsg from the first message not sent yet. The kernel stops
// at the first message that fails and reports the ones before it: the
// call is made again from there, so that the failing message's own error
// (or EAGAIN: wait until writable) comes back, not a short count.
func (h *sendHdrs) send(fd uintptr) bool {
	for h.got < h.n {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&h.hs[h.got])), uintptr(h.n-h.got), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return false // wait until writable, then go on from h.got
		case isReportedICMP(e) && h.retries < maxICMPRetries:
			// Most likely not this message's error but one an ICMP
			// message left on the connected socket (anyone can forge
			// one), which this call consumed: the kernel's tunnels
			// never consult it, so count it and send again. (A real
			// error, such as no route, comes back every time: bounded.)
			h.retries++
			h.icmp.Add(1)
			continue
		case e != 0:
			h.errno = e
			return true
		case n == 0:
			h.errno = unix.EIO // nothing sent and no reason given
			return true
		}
		h.got += int(n)
	}
	return true
}

// drainErrors empties a socket's error queue.
func drainErrors(fd uintptr) {
	var b, oob [256]byte
	for i := 0; i < 1024; i++ {
		if _, _, _, _, err := unix.Recvmsg(int(fd), b[:], oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

// maxICMPRetries bounds the sends of one batch that an error ICMP may have
// left makes again: each consumes one, so a flood of forged errors costs a
// batch nothing until this many land within one sendmmsg.
const maxICMPRetries = 8

// isReportedICMP reports whether e is an error that an ICMP message (port,
// protocol or host unreachable, and the like: the kernel's
// icmp_err_convert and icmpv6_err_convert) sets on a connected socket, to
// be returned by its next call whatever that call does.
func isReportedICMP(e syscall.Errno) bool {
	switch e {
	case unix.ECONNREFUSED, unix.ENOPROTOOPT, unix.EOPNOTSUPP, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.ENONET, unix.EPROTO, unix.EACCES, unix.EMSGSIZE:
		return true
	}
	return false
}

// setControl points a connected socket's message header at its control
// buffer (none if oob is empty), with no address.
func setControl(h *unix.Msghdr, oob []byte) {
	h.Name, h.Namelen, h.Flags = nil, 0, 0
	if len(oob) > 0 {
		h.Control = &oob[0]
		h.SetControllen(len(oob))
	} else {
		h.Control, h.Controllen = nil, 0
	}
}
