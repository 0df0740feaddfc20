// Package tap is the Ethernet side of a session: a Linux TAP device read and
// written in batches of frames.
//
// Every device is an fd on /dev/net/tun in non-blocking mode, served by the
// Go runtime's poller. Two creators sit behind [Open]: songgao/water (the
// user's package), which suffices for a plain TAP, and a direct x/sys/unix
// ioctl path for what water cannot express: IFF_VNET_HDR and offloads,
// and re-attaching to a persistent device without clearing persistence (water
// always issues TUNSETPERSIST, with 0 unless asked otherwise). The I/O is the
// same for both.
package tap

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/poll"
)

// Backend chooses how the device is created.
type Backend uint8

const (
	// Auto uses water when it can create what the Config asks for and the
	// unix path otherwise.
	Auto Backend = iota
	Water
	Unix
)

// backendWords are the backends' text forms, by value.
var backendWords = []string{Auto: "auto", Water: "water", Unix: "unix"}

// String is the text form (see [Backend.MarshalText]), or "backend?".
func (b Backend) String() string {
	if int(b) < len(backendWords) {
		return backendWords[b]
	}
	return "backend?"
}

// ErrBadBackend: a word that names no backend.
var ErrBadBackend = errors.New("the TAP backend must be auto, water or unix")

// MarshalText is "auto", "water" or "unix"; any other value has no text
// form ([ErrBadBackend]).
func (b Backend) MarshalText() ([]byte, error) {
	if int(b) >= len(backendWords) {
		return nil, fmt.Errorf("%w, not backend %d", ErrBadBackend, uint8(b))
	}
	return []byte(backendWords[b]), nil
}

// UnmarshalText takes "auto", "water" or "unix", exactly (l2tpu daemon's
// -tap-backend); any other word is an error that wraps [ErrBadBackend],
// and leaves b as it was.
func (b *Backend) UnmarshalText(text []byte) error {
	for v, w := range backendWords {
		if w == string(text) {
			*b = Backend(v)
			return nil
		}
	}
	return fmt.Errorf("%w, not %q", ErrBadBackend, text)
}

// Config describes a TAP device to create or attach to.
type Config struct {
	// Name is the interface name, or a template with one %d that the
	// kernel expands to the lowest free index (as l2tp_eth's "l2tpeth%d").
	Name string
	// Persist keeps the interface when the fd is closed, so a restarted
	// process can attach to it again; Remove deletes it.
	Persist bool
	// Attach requires the interface to exist already (a persistent TAP
	// left by an earlier process) instead of creating it.
	Attach  bool
	Backend Backend
	// VnetHdr opens the device with IFF_VNET_HDR so that writes can carry
	// coalesced TCP (GRO in userspace). Reads are unchanged for the caller
	// (offset must leave 10 bytes of headroom). Needs the unix backend.
	VnetHdr bool
	// TSO (with VnetHdr) lets the stack hand over TCP super-frames and
	// unchecksummed frames (TUNSETOFFLOAD CSUM, TSO4, TSO6); Read
	// segments and checksums them, so callers still get whole frames.
	TSO bool
	// Queues is how many queues OpenQueues opens (IFF_MULTI_QUEUE when
	// more than one): the kernel spreads the frames it transmits over them
	// by flow, so each can have its own reader. 0 means 1.
	Queues int
	// Owner, when set, gives the device an owner (TUNSETOWNER) and
	// optionally a group (TUNSETGROUP): the TUN driver then lets nobody
	// else without CAP_NET_ADMIN attach a queue, at any time, including
	// while a persistent device has no process behind it. Without an
	// owner any user who can open /dev/net/tun may attach.
	Owner *Owner
}

// Owner is the user (and group, -1 for none) a device belongs to.
type Owner struct {
	UID int
	GID int
}

// ErrBackend: the chosen backend cannot do what the Config asks.
var ErrBackend = errors.New("tap: backend cannot create this device (use tap.Unix)")

// Device is one TAP queue. Read and Write move batches of whole Ethernet
// frames (no FCS); WaitRead blocks until a frame is waiting, holding no
// buffers, so idle devices cost nothing but a parked goroutine.
type Device interface {
	Name() string
	// WaitRead returns when a frame can be read, or an error after Close.
	WaitRead() error
	// PollFD is an fd that polls readable while a frame waits, for a
	// caller that waits on many devices at once (epoll); valid until
	// Close. After a Read that filled every buffer, more may be waiting
	// that the fd does not show (the rest of a super-frame): read again.
	PollFD() int
	// Read reads up to len(bufs) waiting frames into bufs[i][offset:],
	// their lengths into sizes, without blocking; it may return 0.
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	// Write writes each bufs[i][offset:] as one frame. It returns how many
	// were written and the last error; a frame that fails is skipped.
	Write(bufs [][]byte, offset int) (int, error)
	// Close detaches: a non-persistent device disappears.
	Close() error
	// Remove deletes the interface even when persistent.
	Remove() error
	// SetCarrier sets the interface's carrier (TUNSETCARRIER, Linux 5.0),
	// which bridges and routing daemons read as whether the link works.
	SetCarrier(on bool) error
	// SetPersist makes the interface outlive the process (or not): a
	// device created without persistence vanishes if the process dies
	// before it is made persistent.
	SetPersist(on bool) error
	// Index is the interface's index.
	Index() (int, error)
	// SetMTU sets the interface's MTU.
	SetMTU(mtu int) error
}

// Open creates (or attaches to) a TAP device.
func Open(c Config) (Device, error) {
	b := c.Backend
	if b == Auto {
		b = Water
		if (c.Attach && !c.Persist) || c.VnetHdr {
			b = Unix
		}
	}
	var (
		o   opened
		err error
	)
	switch b {
	case Water:
		if (c.Attach && !c.Persist) || c.VnetHdr {
			return nil, ErrBackend
		}
		o, err = openWater(c)
	case Unix:
		o, err = openUnix(c)
	default:
		return nil, fmt.Errorf("tap: unknown backend %d", b)
	}
	if err != nil {
		return nil, err
	}
	rc, err := o.f.SyscallConn()
	if err != nil {
		o.f.Close()
		return nil, err
	}
	if c.Owner != nil {
		if err := setOwner(rc, *c.Owner); err != nil {
			if c.Persist && !c.Attach {
				clearPersist(rc)
			}
			o.f.Close()
			return nil, fmt.Errorf("tap: owner of %s: %w", o.name, err)
		}
	}
	d := &fileDevice{f: o.f, rc: rc, waiter: poll.NewWaiter(rc), name: o.name, persist: c.Persist,
		vnet: c.VnetHdr, offload: c.VnetHdr && c.TSO, mq: o.mq, uso: o.uso}
	d.rd.fn = d.readOne
	d.idle.Store(true)
	rc.Control(func(fd uintptr) { d.fd = int(fd) })
	return d, nil
}

// Adopt makes a Device of a queue an earlier process opened (kept for its
// successor, see File): a TAP queue whose IFF_VNET_HDR matches c.VnetHdr,
// or it is closed and an error returned. Its name, multi-queue flag and
// persistence are the device's; offloads are set again as Open sets them.
func Adopt(f *os.File, c Config) (Device, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var req ifreqFlags
	var uso bool
	if err := control(rc, func(fd int) error {
		if err := ioctlPtr(fd, unix.TUNGETIFF, &req); err != nil {
			return err
		}
		if req.flags&(unix.IFF_TAP|unix.IFF_TUN) != unix.IFF_TAP || (req.flags&unix.IFF_VNET_HDR != 0) != c.VnetHdr {
			return fmt.Errorf("flags %#x: %w", req.flags, unix.EINVAL)
		}
		if c.VnetHdr && c.TSO {
			var err error
			uso, err = setOffload(fd)
			return err
		}
		return nil
	}); err != nil {
		f.Close()
		return nil, fmt.Errorf("tap: adopt: %w", err)
	}
	d := &fileDevice{f: f, rc: rc, waiter: poll.NewWaiter(rc), name: unix.ByteSliceToString(req.name[:]),
		persist: req.flags&unix.IFF_PERSIST != 0, vnet: c.VnetHdr, offload: c.VnetHdr && c.TSO,
		mq: req.flags&unix.IFF_MULTI_QUEUE != 0, uso: uso}
	d.rd.fn = d.readOne
	d.idle.Store(true)
	rc.Control(func(fd uintptr) { d.fd = int(fd) })
	return d, nil
}

// File is a duplicate of a queue's descriptor, for a keeper that holds the
// queue across a restart (see Adopt).
func File(d Device) (*os.File, error) {
	fd, ok := d.(*fileDevice)
	if !ok {
		return nil, fmt.Errorf("tap: %T cannot be duplicated", d)
	}
	nfd, err := unix.FcntlInt(uintptr(fd.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), fd.name), nil
}

// MaxQueues is the most queues a TAP device can have (the kernel's
// MAX_TAP_QUEUES).
const MaxQueues = 256

// OpenQueues creates (or attaches to) a TAP device and opens c.Queues
// queues of it; the first is the one Open would return. Attaching to a
// device whose multi-queue flag differs from the Config's (a persistent
// device left by a process configured otherwise) succeeds with the flag
// the device has, and with one queue if it is single-queue.
func OpenQueues(c Config) ([]Device, error) {
	first, err := Open(c)
	if err != nil {
		return nil, err
	}
	qs := []Device{first}
	if !first.(*fileDevice).mq {
		return qs, nil
	}
	// TUNSETIFF on the device's name with IFF_MULTI_QUEUE adds a queue.
	qc := c
	qc.Name = first.Name()
	for len(qs) < c.Queues {
		q, err := Open(qc)
		if err != nil {
			closeQueues(qs, c.Attach)
			return nil, fmt.Errorf("tap: queue %d of %s: %w", len(qs), qc.Name, err)
		}
		qs = append(qs, q)
	}
	if c.Owner != nil {
		// Until TUNSETOWNER, a new multi-queue device takes queues from
		// anyone who can open /dev/net/tun: make sure every queue is ours.
		idx, err := InterfaceIndex(first.Name())
		var info TunInfo
		if err == nil {
			info, err = Info(idx)
		}
		if err == nil && info.Queues != len(qs) {
			err = fmt.Errorf("%d queues attached, %d of them ours: %w", info.Queues, len(qs), ErrForeignQueue)
		}
		if err != nil {
			closeQueues(qs, c.Attach)
			return nil, fmt.Errorf("tap: %s: %w", first.Name(), err)
		}
	}
	return qs, nil
}

// closeQueues undoes OpenQueues: the device goes unless it was attached to.
func closeQueues(qs []Device, attached bool) {
	for _, q := range qs[1:] {
		q.Close()
	}
	if attached {
		qs[0].Close()
	} else {
		qs[0].Remove()
	}
}

// ErrForeignQueue: another process attached a queue to a device being set
// up; it was removed (or left, when attached to).
var ErrForeignQueue = errors.New("another process attached a queue to the device")

// opened is what a backend made: the fd, the interface's name, whether the
// device is multi-queue and whether UDP segmentation offload is on.
type opened struct {
	f       *os.File
	name    string
	mq, uso bool
}

// ifreqFlags is struct ifreq as TUNSETIFF reads it: name and short flags.
type ifreqFlags struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

func openUnix(c Config) (opened, error) {
	if len(c.Name) >= unix.IFNAMSIZ {
		return opened{}, fmt.Errorf("tap: name %q: %w", c.Name, unix.EINVAL)
	}
	if c.Attach {
		if _, err := InterfaceIndex(c.Name); err != nil {
			return opened{}, fmt.Errorf("tap: attach %s: %w", c.Name, unix.ENODEV)
		}
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return opened{}, fmt.Errorf("tap: open /dev/net/tun: %w", err)
	}
	var req ifreqFlags
	copy(req.name[:], c.Name)
	req.flags = unix.IFF_TAP | unix.IFF_NO_PI
	if c.VnetHdr {
		req.flags |= unix.IFF_VNET_HDR
	}
	mq := c.Queues > 1
	if mq {
		req.flags |= unix.IFF_MULTI_QUEUE
	}
	err = ioctlPtr(fd, unix.TUNSETIFF, &req)
	if errors.Is(err, unix.EINVAL) && c.Attach {
		// The device's multi-queue flag is the other one: take it as is.
		mq = !mq
		req.flags ^= unix.IFF_MULTI_QUEUE
		err = ioctlPtr(fd, unix.TUNSETIFF, &req)
	}
	if err != nil {
		unix.Close(fd)
		return opened{}, fmt.Errorf("tap: create %q: %w", c.Name, err)
	}
	uso := false
	if c.VnetHdr && c.TSO {
		if uso, err = setOffload(fd); err != nil {
			unix.Close(fd)
			return opened{}, fmt.Errorf("tap: offloads: %w", err)
		}
	}
	if c.Persist {
		if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
			unix.Close(fd)
			return opened{}, fmt.Errorf("tap: persist: %w", err)
		}
	}
	return opened{os.NewFile(uintptr(fd), "tap"), unix.ByteSliceToString(req.name[:]), mq, uso}, nil
}

var _ Device = (*fileDevice)(nil)

type fileDevice struct {
	// idle: the last Read ended in EAGAIN with no super-frame pending,
	// so the next one waits. Atomic: a reader may look while another
	// (the turnaround, under the session's lock) reads.
	idle    atomic.Bool
	vnet    bool // IFF_VNET_HDR: a virtio_net_hdr precedes every frame
	offload bool // offloads on: reads go through readOffload
	super   superFrame
	f       *os.File
	fd      int
	rc      syscall.RawConn
	waiter  *poll.Waiter
	rd      oneRead // the reader's: Read is never concurrent with itself
	name    string
	persist bool
	mq      bool // one queue of a multi-queue device
	uso     bool // UDP segmentation offload: UDP is segmented on read, coalesced on write
}

func (d *fileDevice) Name() string { return d.name }

func (d *fileDevice) Index() (int, error) { return InterfaceIndex(d.name) }

func (d *fileDevice) SetMTU(mtu int) error { return SetMTU(d.name, mtu) }

func (d *fileDevice) WaitRead() error { return d.waiter.Wait(d.idle.Load()) }

func (d *fileDevice) PollFD() int { return d.fd }

func (d *fileDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.offload {
		return d.readOffload(bufs, sizes, offset)
	}
	head := offset
	if d.vnet {
		head -= vnetHdrLen // the header lands in the headroom
	}
	n := 0
	for n < len(bufs) {
		m, err := d.read(bufs[n][head:])
		if err != nil {
			d.idle.Store(true)
			if err == unix.EAGAIN {
				err = nil
			}
			return n, err
		}
		if m > len(bufs[n])-head {
			continue // the driver reports a frame's length even when it was cut: drop it
		}
		if d.vnet {
			// No offloads are negotiated, so frames arrive whole and
			// checksummed: the header says nothing to act on.
			m -= vnetHdrLen
			if m < 0 {
				continue
			}
		}
		sizes[n] = m
		n++
	}
	d.idle.Store(false)
	return n, nil
}

// oneRead is one read(2) through the poller's fd reference, its callback
// bound once (a closure per call would be an allocation per frame).
type oneRead struct {
	buf []byte
	n   int
	err error
	fn  func(uintptr)
}

// read reads one frame without blocking (EAGAIN when there is none). It
// goes through Control, not Read: Read takes the fd's read lock, which a
// WaitRead parked in the poller holds, and a read by the receive path's
// turnaround must not wait for that.
func (d *fileDevice) read(b []byte) (int, error) {
	d.rd.buf = b
	err := d.rc.Control(d.rd.fn)
	d.rd.buf = nil
	if err != nil {
		return 0, err
	}
	return d.rd.n, d.rd.err
}

// readOne and the other calls on the data path are raw system calls: they
// never block (the fd is non-blocking), and going through the scheduler
// (Syscall) wakes the runtime's monitor thread whenever it sleeps, a second
// thread woken, on an idle machine, for every frame. Measured: context
// switches per ping through two daemons 17 → 7, the RTT about halved.
func (d *fileDevice) readOne(fd uintptr) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&d.rd.buf[0])), uintptr(len(d.rd.buf)))
		if e != unix.EINTR {
			d.rd.n, d.rd.err = int(n), nil
			if e != 0 {
				d.rd.n, d.rd.err = 0, e
			}
			return
		}
	}
}

func (d *fileDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d.vnet {
		return d.writeVnet(bufs, offset)
	}
	n := 0
	var werr error
	for _, b := range bufs {
		if err := d.writev(b[offset:]); err != nil {
			werr = err // e.g. EIO while the interface is down: skip the frame
			continue
		}
		n++
	}
	return n, werr
}

func (d *fileDevice) Close() error { return d.f.Close() }

func (d *fileDevice) Remove() error {
	if d.persist {
		if err := clearPersist(d.rc); err != nil {
			d.f.Close()
			return fmt.Errorf("tap: clear persist on %s: %w", d.name, err)
		}
	}
	return d.f.Close()
}

func (d *fileDevice) SetCarrier(on bool) error {
	v := 0
	if on {
		v = 1
	}
	err := control(d.rc, func(fd int) error { return unix.IoctlSetPointerInt(fd, unix.TUNSETCARRIER, v) })
	if err != nil {
		return fmt.Errorf("tap: carrier of %s: %w", d.name, err)
	}
	return nil
}

// SetCarrierOf sets the carrier of the device a queue's descriptor fd
// belongs to (see Adopt), without making a Device of it.
func SetCarrierOf(fd int, on bool) error {
	v := 0
	if on {
		v = 1
	}
	return unix.IoctlSetPointerInt(fd, unix.TUNSETCARRIER, v)
}

func (d *fileDevice) SetPersist(on bool) error {
	v := 0
	if on {
		v = 1
	}
	if err := control(d.rc, func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, v) }); err != nil {
		return fmt.Errorf("tap: persist %v on %s: %w", on, d.name, err)
	}
	d.persist = on
	return nil
}

func clearPersist(rc syscall.RawConn) error {
	return control(rc, func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0) })
}

// setOwner sets the device's owner and group (TUNSETOWNER, TUNSETGROUP).
func setOwner(rc syscall.RawConn, o Owner) error {
	return control(rc, func(fd int) error {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, o.UID); err != nil {
			return err
		}
		if o.GID >= 0 {
			return unix.IoctlSetInt(fd, unix.TUNSETGROUP, o.GID)
		}
		return nil
	})
}

// control runs f on the raw fd and returns its error.
func control(rc syscall.RawConn, f func(fd int) error) error {
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// RemovePersistent deletes a persistent device that no process holds, such
// as one an earlier process left for a session it could not restore.
func RemovePersistent(name string) error {
	d, err := Open(Config{Name: name, Attach: true, Persist: true, Backend: Unix})
	if err != nil {
		return err
	}
	return d.Remove()
}
