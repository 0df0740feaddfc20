package conn

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/fixture"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// forgeUnreachable sends what anyone with a raw socket can: an ICMP
// destination unreachable of code quoting a UDP datagram from local to
// remote, as if remote's host had sent it.
func forgeUnreachable(t *testing.T, code byte, local, remote netip.AddrPort) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	m := fixture.Unreachable(code, local, remote)
	r := remote.Addr().As4()
	if err := unix.Sendto(fd, m, 0, &unix.SockaddrInet4{Addr: r}); err != nil {
		t.Fatal(err)
	}
}

// A forged ICMP error must not cost a frame: the kernel's tunnels never
// consult the error it leaves on the socket (finding 3 of issue 18). Every
// destination unreachable a connected UDP socket reports: port (3),
// protocol (2), host unknown (7), filtered (13).
func TestForgedICMPDropsNothing(t *testing.T) {
	privtest.Require(t)
	for _, c := range []struct {
		code byte
		want unix.Errno
	}{{3, unix.ECONNREFUSED}, {2, unix.ENOPROTOOPT}, {7, unix.EHOSTDOWN}, {13, unix.EHOSTUNREACH}} {
		t.Run(c.want.Error(), func(t *testing.T) { forgedICMPDropsNothing(t, c.code, c.want) })
	}
}

func forgedICMPDropsNothing(t *testing.T, code byte, want unix.Errno) {
	lo := netip.MustParseAddr("127.0.0.1")
	aAddr, cAddr := netip.AddrPortFrom(lo, 41801), netip.AddrPortFrom(lo, 41802)

	// Positive control: the forged message reaches a connected socket,
	// whose next send fails with it.
	ctl, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ctl)
	ctlAddr := netip.AddrPortFrom(lo, 41803)
	if err := unix.Bind(ctl, &unix.SockaddrInet4{Addr: lo.As4(), Port: int(ctlAddr.Port())}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(ctl, &unix.SockaddrInet4{Addr: lo.As4(), Port: int(cAddr.Port())}); err != nil {
		t.Fatal(err)
	}
	forgeUnreachable(t, code, ctlAddr, cAddr)
	time.Sleep(50 * time.Millisecond) // the kernel takes it in softirq
	if _, err := unix.Write(ctl, []byte("x")); !errors.Is(err, want) {
		t.Fatalf("control: a plain connected socket's send after the forged ICMP: %v, want %v", err, want)
	}

	for _, o := range []UDPOptions{{}, {GSO: true}} {
		a, err := DialUDP(aAddr, cAddr, o)
		if err != nil {
			t.Fatal(err)
		}
		c, err := DialUDP(cAddr, aAddr, UDPOptions{})
		if err != nil {
			a.Close()
			t.Fatal(err)
		}
		closed := false
		t.Cleanup(func() {
			if !closed {
				a.Close()
				c.Close()
			}
		})
		msgs := [][]byte{make([]byte, 100), make([]byte, 100), make([]byte, 100)}
		for i := range msgs {
			msgs[i][0] = byte(i + 1)
		}
		for round := 0; round < 3; round++ {
			forgeUnreachable(t, code, aAddr, cAddr)
			time.Sleep(50 * time.Millisecond)
			if n, err := a.WriteBatch(msgs, 0); n != len(msgs) || err != nil {
				t.Fatalf("gso %v, round %d: sent %d of %d after a forged ICMP: %v", o.GSO, round, n, len(msgs), err)
			}
		}
		if got := a.ICMPErrors(); got != 3 {
			t.Errorf("gso %v: %d ICMP errors counted, want 3", o.GSO, got)
		}
		bufs, sizes := make([][]byte, MaxBatch), make([]int, MaxBatch)
		for i := range bufs {
			bufs[i] = make([]byte, 65536)
		}
		got := 0
		deadline := time.Now().Add(5 * time.Second)
		for got < 3*len(msgs) && time.Now().Before(deadline) {
			n, err := c.ReadBatch(bufs, sizes, 0)
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				got += sizes[i] / 100 // a GRO-less receiver: one each
			}
			if n == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		a.Close()
		c.Close()
		closed = true
		if got != 3*len(msgs) {
			t.Fatalf("gso %v: the peer received %d of %d messages", o.GSO, got, 3*len(msgs))
		}
	}
}
