package privtest

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/netns"
)

// Capture is an AF_PACKET socket seeing every frame on one interface of a
// namespace, in both directions: the test's own tcpdump.
type Capture struct {
	fd  int
	idx int
}

// NewCapture starts capturing on ifname in ns; it stops when the test ends.
func NewCapture(t testing.TB, ns *NS, ifname string) *Capture {
	t.Helper()
	return NewCaptureOf(t, ns, ifname, unix.ETH_P_ALL)
}

// NewCaptureOf is NewCapture for frames of one EtherType only.
func NewCaptureOf(t testing.TB, ns *NS, ifname string, proto uint16) *Capture {
	t.Helper()
	var fd, idx int
	err := netns.Do(ns.Path(), func() (err error) {
		idx, err = ifindex(ifname)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(proto)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: idx})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &Capture{fd: fd, idx: idx}
}

// Send makes the kernel transmit frame on the interface (as if the host's
// stack sent it): on a TAP, the process holding the TAP reads it.
func (c *Capture) Send(t testing.TB, frame []byte) {
	t.Helper()
	// The frame's own EtherType, as a stack's frame has: the kernel's flow
	// dissector (a multi-queue TAP's queue choice) goes by it.
	proto := uint16(unix.ETH_P_ALL)
	if len(frame) >= 14 {
		proto = uint16(frame[12])<<8 | uint16(frame[13])
	}
	if err := unix.Sendto(c.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: c.idx, Protocol: htons(proto)}); err != nil {
		t.Fatal(err)
	}
}

// Next returns the next captured frame (from the Ethernet header on) and
// whether it was sent by this host, or nil after timeout.
func (c *Capture) Next(timeout time.Duration) (frame []byte, outgoing bool) {
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 65536)
	n, from, err := unix.Recvfrom(c.fd, buf, 0)
	if err != nil {
		return nil, false
	}
	ll, _ := from.(*unix.SockaddrLinklayer)
	return buf[:n], ll != nil && ll.Pkttype == unix.PACKET_OUTGOING
}

// Collect gathers frames until quiet for the given time.
func (c *Capture) Collect(quiet time.Duration, keep func(frame []byte, outgoing bool) bool) [][]byte {
	var out [][]byte
	for {
		f, o := c.Next(quiet)
		if f == nil {
			return out
		}
		if keep(f, o) {
			out = append(out, f)
		}
	}
}

// CollectN gathers frames until want of them are kept (waiting up to
// patience for them: a loaded machine may stall the writer that long),
// then until quiet for the given time, to see any beyond want.
func (c *Capture) CollectN(want int, patience, quiet time.Duration, keep func(frame []byte, outgoing bool) bool) [][]byte {
	var out [][]byte
	deadline := time.Now().Add(patience)
	for len(out) < want {
		left := time.Until(deadline)
		if left <= 0 {
			return out
		}
		f, o := c.Next(left)
		if f == nil {
			return out
		}
		if keep(f, o) {
			out = append(out, f)
		}
	}
	return append(out, c.Collect(quiet, keep)...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
