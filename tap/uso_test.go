package tap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"
	"unsafe"

	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/privtest"
)

// udpFrames builds n datagrams of one flow with valid checksums (the last
// one shorter when short), IPv4 IDs from 100 up, with offset bytes of
// headroom each.
func udpFrames(t testing.TB, v6, vlan, df bool, n, size, offset int, short bool) [][]byte {
	var out [][]byte
	for i := 0; i < n; i++ {
		sz := size
		if short && i == n-1 {
			sz = size/2 + 1
		}
		payload := make([]byte, sz)
		for k := range payload {
			payload[k] = byte(i*13 + k)
		}
		out = append(out, append(make([]byte, offset), udpFrameOf(t, v6, vlan, df, uint16(100+i), 40000, payload)...))
	}
	return out
}

func udpFrameOf(t testing.TB, v6, vlan, df bool, id, sport uint16, payload []byte) []byte {
	return frameOf(t, v6, vlan, df, id, layers.IPProtocolUDP, &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: 5201}, payload)
}

// segmentAll cuts a super-frame (with its virtio header, n bytes) as Read
// does and returns copies of the segments.
func segmentAll(t testing.TB, bp *[]byte, n int, s seg, gsoSize int) [][]byte {
	ts := superFrame{buf: bp, n: n, seg: s, mss: gsoSize, next: s.hdr + vnetHdrLen}
	bufs := make([][]byte, 3) // fewer than segments: several calls
	for i := range bufs {
		bufs[i] = make([]byte, 2048+16)
	}
	sizes := make([]int, 3)
	var got [][]byte
	for ts.next < ts.n {
		k := ts.emit(bufs, sizes, 16)
		if k == 0 {
			t.Fatal("emit made no progress")
		}
		for i := 0; i < k; i++ {
			got = append(got, append([]byte(nil), bufs[i][16:16+sizes[i]]...))
		}
	}
	return got
}

// TestUDPSegmentInvertsCoalesce: a run of datagrams coalesced for the TAP
// and cut again as Read cuts a USO super-frame gives back the very bytes
// gopacket built: lengths, IDs, every checksum.
func TestUDPSegmentInvertsCoalesce(t *testing.T) {
	for _, tc := range []struct {
		name         string
		v6, vlan, df bool
	}{{"v4", false, false, false}, {"v4 df", false, false, true}, {"v6", true, false, false}, {"v4 vlan", false, true, true}, {"v6 vlan", true, true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			const off, size = 16, 64
			frames := udpFrames(t, tc.v6, tc.vlan, tc.df, 9, size, off, true)
			j, segs := runOf(t, frames, off)
			if j != len(frames) {
				t.Fatalf("run of %d, want %d", j, len(frames))
			}
			bp, n, s := superOf(t, frames, off, segs)
			defer superPool.Put(bp)
			h := (*bp)[:vnetHdrLen]
			if h[0] != vnetFlagNeedsCsum || h[1] != vnetGSOUDPL4 || binary.NativeEndian.Uint16(h[4:]) != size {
				t.Fatalf("virtio header %x", h)
			}
			got := segmentAll(t, bp, n, s, size)
			if len(got) != len(frames) {
				t.Fatalf("%d segments, want %d", len(got), len(frames))
			}
			for i := range frames {
				if !bytes.Equal(got[i], frames[i][off:]) {
					t.Fatalf("datagram %d:\n got %x\nwant %x", i, got[i], frames[i][off:])
				}
			}
		})
	}
}

func TestCoalesceUDPRefuses(t *testing.T) {
	frames := udpFrames(t, false, false, false, 4, 100, 0, false)
	s0 := mustSeg(t, frames[0])
	for _, tc := range []struct {
		name string
		f    []byte
	}{
		{"ID gap without DF", udpFrameOf(t, false, false, false, 102, 40000, make([]byte, 100))},
		{"other port", udpFrameOf(t, false, false, false, 101, 40001, make([]byte, 100))},
	} {
		s := mustSeg(t, tc.f)
		if follows(frames[0], &s0, tc.f, &s) {
			t.Errorf("%s accepted", tc.name)
		}
	}
	// Longer after shorter, a bad checksum, no checksum: the run stops.
	shorter := [][]byte{frames[0], udpFrameOf(t, false, false, false, 101, 40000, make([]byte, 50)), udpFrameOf(t, false, false, false, 102, 40000, make([]byte, 100))}
	if s1 := mustSeg(t, frames[1]); !follows(frames[0], &s0, frames[1], &s1) { // the positive control
		t.Error("the next datagram does not follow")
	}
	if j, _ := run(shorter, 0, 0, s0, nil); j != 2 {
		t.Errorf("run through a shorter datagram: %d", j)
	}
	bad := append([]byte(nil), frames[1]...)
	bad[len(bad)-1] ^= 1
	if j, _ := run([][]byte{frames[0], bad}, 0, 0, s0, nil); j != 1 {
		t.Error("corrupted datagram merged")
	}
	zero := append([]byte(nil), frames[1]...)
	zero[s0.l4+6], zero[s0.l4+7] = 0, 0
	if s, _ := parse(zero); s.mergeable(zero) {
		t.Error("datagram without checksum merged")
	}
	lie := append([]byte(nil), frames[1]...)
	lie[s0.l4+5]++ // UDP length disagrees with IP's
	if s, _ := parse(lie); s.mergeable(lie) {
		t.Error("inconsistent UDP length accepted")
	}
}

// FuzzSegmentCoalesce: for any flow shape, coalescing n frames and cutting
// the super-frame again as Read does gives back exactly the frames gopacket
// built with its own checksums (TCP and UDP, IPv4/IPv6, VLAN).
func FuzzSegmentCoalesce(f *testing.F) {
	f.Add(false, false, false, true, uint8(5), uint16(1000))
	f.Add(true, true, true, false, uint8(3), uint16(64))
	f.Add(false, true, false, false, uint8(2), uint16(1))
	f.Fuzz(func(t *testing.T, udp, v6, vlan, df bool, n uint8, size uint16) {
		k, sz := int(n%20)+2, int(size%1500)+1
		var frames [][]byte
		if udp {
			frames = udpFrames(t, v6, vlan, df, k, sz, 0, sz > 1)
		} else {
			frames = tcpFrames(t, v6, vlan, k, max(sz, 2), 0)
		}
		j, segs := runOf(t, frames, 0)
		frames = frames[:j]
		bp, total, s := superOf(t, frames, 0, segs)
		defer superPool.Put(bp)
		if total > vnetHdrLen+gsoMaxSize {
			t.Fatalf("super-frame of %d", total)
		}
		got := segmentAll(t, bp, total, s, int(binary.NativeEndian.Uint16((*bp)[4:])))
		if len(got) != len(frames) {
			t.Fatalf("%d segments from %d frames", len(got), len(frames))
		}
		for i := range frames {
			// Ethernet padding (frames under 60 bytes) is not part of the
			// packet: the kernel pads what it sends again.
			want := frames[i][:segs[i].end]
			if !bytes.Equal(got[i], want) {
				t.Fatalf("frame %d of %d:\n got %x\nwant %x", i, len(frames), got[i], want)
			}
		}
	})
}

// TestUSOKernel: on a kernel with USO the TAP takes a coalesced run of
// datagrams, and the stack splits it back into the datagrams sent; a socket
// sending with UDP_SEGMENT through the TAP reaches Read as whole datagrams
// with valid checksums.
func TestUSOKernel(t *testing.T) {
	privtest.Require(t)
	ns := privtest.NewNS(t, privtest.Prefix())
	d := open(t, ns, Config{Name: "uso0", VnetHdr: true, TSO: true})
	defer d.Close()
	if !d.(*fileDevice).uso {
		t.Skip("this kernel has no USO on TAP devices (Linux 6.2 on)")
	}
	ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.uso0.disable_ipv6=1")
	ns.Run(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "uso0")
	ns.Run(t, "ip", "link", "set", "uso0", "up")
	ns.Run(t, "ip", "neigh", "add", "192.0.2.1", "lladdr", "02:00:00:00:00:01", "dev", "uso0")
	var mac net.HardwareAddr
	var sock *net.UDPConn
	inNS(t, ns, func() error {
		ifi, err := net.InterfaceByName("uso0")
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		sock, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP{192, 0, 2, 2}, Port: 5201})
		return err
	})
	defer sock.Close()

	// Write: 9 datagrams (the last shorter) in one batch.
	const off, size = 16, 64
	frames := udpFrames(t, false, false, true, 9, size, off, true)
	for _, f := range frames {
		copy(f[off:], mac) // to the TAP's own address
		s, _ := parse(f[off:])
		binary.BigEndian.PutUint16(f[off+s.l4+6:], 0)
		binary.BigEndian.PutUint16(f[off+s.l4+6:], ^fold(checksum(pseudo(f[off:], &s, s.end-s.l4), f[off+s.l4:off+s.end])))
	}
	if _, segs := run(frames, off, 0, mustSeg(t, frames[0][off:]), nil); len(segs) != 9 {
		t.Fatalf("run of %d", len(segs))
	}
	if n, err := d.Write(frames, off); n != 9 || err != nil {
		t.Fatalf("Write: %d %v", n, err)
	}
	sock.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	for i, f := range frames {
		n, _, err := sock.ReadFromUDP(buf)
		s, _ := parse(f[off:])
		if err != nil || !bytes.Equal(buf[:n], f[off+s.hdr:off+s.end]) {
			t.Fatalf("datagram %d: %v %x", i, err, buf[:n])
		}
	}

	// Read: one UDP_SEGMENT send of 10 × 100 bytes out through the TAP.
	var tx *net.UDPConn
	inNS(t, ns, func() (err error) {
		tx, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.IP{192, 0, 2, 2}, Port: 5300}, &net.UDPAddr{IP: net.IP{192, 0, 2, 1}, Port: 5301})
		return err
	})
	defer tx.Close()
	payload := make([]byte, 1000)
	for i := range payload {
		payload[i] = byte(i / 100)
	}
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], 100)
	if _, _, err := tx.WriteMsgUDP(payload, oob, nil); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := make([][]byte, 16), make([]int, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	var got [][]byte
	privtest.Eventually(t, 5*time.Second, func() error {
		n, err := d.Read(bufs, sizes, 16)
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			f := bufs[i][16 : 16+sizes[i]]
			if s, ok := parse(f); ok && s.t == &udp && binary.BigEndian.Uint16(f[s.l4+2:]) == 5301 {
				if !csumOK(f, &s) {
					t.Fatalf("datagram %d: bad checksum", len(got))
				}
				got = append(got, append([]byte(nil), f[s.hdr:s.end]...))
			}
		}
		if len(got) < 10 {
			return fmt.Errorf("%d of 10 datagrams", len(got))
		}
		return nil
	})
	for i, g := range got {
		if !bytes.Equal(g, payload[i*100:(i+1)*100]) {
			t.Fatalf("datagram %d: %x", i, g)
		}
	}
}
