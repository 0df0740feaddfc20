package tap

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// tcpFrames builds n consecutive segments of one flow with valid checksums
// (the last one shorter), with offset bytes of headroom each.
func tcpFrames(t testing.TB, v6, vlan bool, n, mss, offset int) [][]byte {
	var out [][]byte
	for i := 0; i < n; i++ {
		size := mss
		if i == n-1 {
			size = mss / 2
		}
		payload := make([]byte, size)
		for k := range payload {
			payload[k] = byte(i*7 + k)
		}
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 5001, Seq: 1000 + uint32(i*mss), Ack: 77, ACK: true, Window: 500, PSH: i == n-1,
			Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 0, 1, 0, 0, 0, 2}}}}
		f := frameOf(t, v6, vlan, true, uint16(100+i), layers.IPProtocolTCP, tcp, payload)
		out = append(out, append(make([]byte, offset), f...))
	}
	return out
}

// l4Layer is a TCP or UDP layer of gopacket's.
type l4Layer interface {
	gopacket.SerializableLayer
	SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
}

// frameOf serializes Ethernet (with a VLAN tag if vlan), IPv4 (ID id, DF
// if df) or IPv6, l4 and payload, every length and checksum computed by
// gopacket.
func frameOf(t testing.TB, v6, vlan, df bool, id uint16, proto layers.IPProtocol, l4 l4Layer, payload []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	var ip gopacket.SerializableLayer
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.ParseIP("2001:db8::2")}
		l4.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: id, Protocol: proto, SrcIP: net.IP{192, 0, 2, 1}, DstIP: net.IP{192, 0, 2, 2}}
		if df {
			ip4.Flags = layers.IPv4DontFragment
		}
		l4.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	}
	ls := []gopacket.SerializableLayer{eth}
	if vlan {
		et := eth.EthernetType
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 100, Type: et})
	}
	ls = append(ls, ip, l4, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCoalesce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		v6, vlan bool
	}{{"v4", false, false}, {"v6", true, false}, {"v4 vlan", false, true}, {"v6 vlan", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			const off, mss = 16, 1000
			frames := tcpFrames(t, tc.v6, tc.vlan, 5, mss, off)
			j, segs := runOf(t, frames, off)
			if j != len(frames) {
				t.Fatalf("run of %d, want %d", j, len(frames))
			}
			var want []byte
			for i, f := range frames {
				want = append(want, f[off+segs[i].hdr:off+segs[i].end]...)
			}
			out := make([]byte, vnetHdrLen+gsoMaxSize)
			n := coalesce(out, frames, off, segs)
			h := out[:vnetHdrLen]
			gso := byte(vnetGSOTCPv4)
			if tc.v6 {
				gso = vnetGSOTCPv6
			}
			if h[0] != vnetFlagNeedsCsum || h[1] != gso || binary.NativeEndian.Uint16(h[4:]) != mss ||
				int(binary.NativeEndian.Uint16(h[2:])) != segs[0].hdr || int(binary.NativeEndian.Uint16(h[6:])) != segs[0].l4 || binary.NativeEndian.Uint16(h[8:]) != 16 {
				t.Fatalf("vnet header %x", h)
			}
			p := gopacket.NewPacket(out[vnetHdrLen:n], layers.LayerTypeEthernet, gopacket.Default)
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp == nil || !bytes.Equal(tcp.Payload, want) || tcp.Seq != 1000 || !tcp.PSH || !tcp.ACK {
				t.Fatalf("coalesced TCP: %v", p)
			}
			if ip4, ok := p.NetworkLayer().(*layers.IPv4); ok {
				if int(ip4.Length) != 20+len(tcp.Contents)+len(want) {
					t.Fatalf("IPv4 length %d", ip4.Length)
				}
				s := segs[0]
				if fold(checksum(0, out[vnetHdrLen+s.l3:vnetHdrLen+s.l3+20])) != 0xffff {
					t.Fatal("IPv4 header checksum")
				}
			}
			// Completing the partial checksum as the kernel does gives a
			// valid segment.
			frame := append([]byte(nil), out[vnetHdrLen:n]...)
			s0 := segs[0]
			sum := checksum(0, frame[s0.l4:])
			binary.BigEndian.PutUint16(frame[s0.l4+16:], ^fold(sum))
			s0.end = len(frame)
			if !csumOK(frame, &s0) {
				t.Fatal("completed checksum invalid")
			}
		})
	}
}

func TestCoalesceRefuses(t *testing.T) {
	const off = 0
	frames := tcpFrames(t, false, false, 3, 1000, off)
	s0 := mustSeg(t, frames[0])
	s1 := mustSeg(t, frames[1])
	s2 := mustSeg(t, frames[2])
	if !follows(frames[0], &s0, frames[1], &s1) { // the positive control
		t.Fatal("the next segment does not follow")
	}
	if follows(frames[0], &s0, frames[2], &s2) {
		t.Fatal("a gap in sequence numbers was accepted")
	}
	if j, _ := run(frames, off, 0, s0, nil); j != 3 {
		t.Fatalf("run of %d, want 3", j)
	}
	bad := append([]byte(nil), frames[1]...)
	bad[len(bad)-1] ^= 1
	if sb, _ := parse(bad); csumOK(bad, &sb) {
		t.Fatal("a corrupted segment passed the checksum")
	}
	if j, _ := run([][]byte{frames[0], bad, frames[2]}, off, 0, s0, nil); j != 1 {
		t.Fatalf("a corrupted segment merged: run of %d", j)
	}
	badFirst := append([]byte(nil), frames[0]...)
	badFirst[len(badFirst)-1] ^= 1
	if j, _ := run([][]byte{badFirst, frames[1]}, off, 0, s0, nil); j != 1 {
		t.Fatalf("a corrupted first segment merged: run of %d", j)
	}
	badIP := append([]byte(nil), frames[1]...)
	badIP[s1.l3+8]-- // TTL, the header checksum not updated
	if s, _ := parse(badIP); s.mergeable(badIP) {
		t.Fatal("a damaged IPv4 header accepted for coalescing")
	}
	syn := append([]byte(nil), frames[1]...)
	syn[s1.l4+13] |= tcpSYN
	if s, _ := parse(syn); s.mergeable(syn) {
		t.Fatal("SYN accepted for coalescing")
	}
	for _, junk := range [][]byte{nil, make([]byte, 13), make([]byte, 60), frames[0][:40]} {
		parse(junk)
	}
}

// FuzzParse: no input makes the parser, the merger or the segmenter
// misbehave: offsets stay in the frame, and any frame taken as a TSO or
// USO super-frame is cut into segments that fit the buffers Read is given.
func FuzzParse(f *testing.F) {
	for _, fr := range tcpFrames(f, false, true, 2, 200, 0) {
		f.Add(fr, uint16(100))
	}
	f.Add(udpFrameOf(f, true, true, false, 1, 2, make([]byte, 300)), uint16(64))
	f.Fuzz(func(t *testing.T, b []byte, mss uint16) {
		s, ok := parse(b)
		if !ok {
			return
		}
		if !(s.l3 < s.l4 && s.l4 < s.hdr && s.hdr < s.end && s.end <= len(b) && s.hdr <= maxMergeHdr) ||
			!s.t.stream && s.hdr != s.l4+8 {
			t.Fatalf("offsets %+v for %d bytes", s, len(b))
		}
		csumOK(b, &s)
		if s.mergeable(b) {
			out := make([]byte, vnetHdrLen+maxMergeHdr)
			merge(out, b, []seg{s, s})
		}
		if len(b) > gsoMaxSize {
			return
		}
		size := int(mss%1500) + 1
		bp := superPool.Get().(*[]byte)
		defer superPool.Put(bp)
		n := vnetHdrLen + copy((*bp)[vnetHdrLen:], b)
		ts := superFrame{buf: bp, n: n, seg: s, mss: size, next: s.hdr + vnetHdrLen}
		bufs, sizes := make([][]byte, 8), make([]int, 8)
		for i := range bufs {
			bufs[i] = make([]byte, 64+maxMergeHdr+1500)
		}
		for ts.next < ts.n {
			k := ts.emit(bufs, sizes, 64)
			for i := 0; i < k; i++ {
				if sizes[i] > s.hdr+size {
					t.Fatalf("segment of %d bytes, headers %d + mss %d", sizes[i], s.hdr, size)
				}
			}
		}
	})
}

// TestSegmentInvertsCoalesce: a super-frame cut by Read's TSO path gives
// back exactly the frames it was made of: headers, IP IDs, sequence
// numbers, PSH only on the last, every checksum recomputed.
func TestSegmentInvertsCoalesce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		v6, vlan bool
	}{{"v4", false, false}, {"v6", true, false}, {"v4 vlan", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			const mss = 1000
			frames := tcpFrames(t, tc.v6, tc.vlan, 7, mss, 0)
			_, segs := runOf(t, frames, 0)
			bp, n, s := superOf(t, frames, 0, segs)
			ts := superFrame{buf: bp, n: n, seg: s, mss: mss, next: s.hdr + vnetHdrLen}
			bufs := make([][]byte, 3) // fewer than segments: emitted over several calls
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			sizes := make([]int, 3)
			var got [][]byte
			for ts.next < ts.n {
				k := ts.emit(bufs, sizes, 16)
				for i := 0; i < k; i++ {
					got = append(got, append([]byte(nil), bufs[i][16:16+sizes[i]]...))
				}
			}
			if len(got) != len(frames) {
				t.Fatalf("%d segments, want %d", len(got), len(frames))
			}
			for i := range frames {
				if !bytes.Equal(got[i], frames[i]) {
					t.Fatalf("segment %d:\n got %x\nwant %x", i, got[i][:60], frames[i][:60])
				}
			}
		})
	}
}

func TestCompleteCsum(t *testing.T) {
	f := tcpFrames(t, false, false, 1, 300, 0)[0]
	s, _ := parse(f)
	want := binary.BigEndian.Uint16(f[s.l4+16:])
	// What the stack leaves for NEEDS_CSUM: the pseudo-header sum.
	binary.BigEndian.PutUint16(f[s.l4+16:], fold(pseudo(f, &s, s.end-s.l4)))
	if !completeCsum(f[:s.end], s.l4, 16) || binary.BigEndian.Uint16(f[s.l4+16:]) != want {
		t.Fatalf("checksum %#x, want %#x", binary.BigEndian.Uint16(f[s.l4+16:]), want)
	}
	if completeCsum(f, len(f), 16) {
		t.Fatal("out of range accepted")
	}
}

// refChecksum is RFC 1071 as written: 16-bit big-endian words.
func refChecksum(sum uint64, b []byte) uint64 {
	for ; len(b) >= 2; b = b[2:] {
		sum += uint64(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

func FuzzChecksum(f *testing.F) {
	f.Add(uint64(0), []byte{})
	f.Add(uint64(0x1234), []byte{0xff})
	f.Add(uint64(1<<40), bytes.Repeat([]byte{0xff}, 1500))
	f.Add(uint64(7), bytes.Repeat([]byte{0xfe, 0x01, 0x80}, 111))
	f.Fuzz(func(t *testing.T, sum uint64, b []byte) {
		sum &= 1<<48 - 1 // callers pass pseudo-header sums, far below 2^64
		if got, want := fold(checksum(sum, b)), fold(refChecksum(sum, b)); got != want {
			t.Fatalf("checksum %#x, RFC 1071 %#x", got, want)
		}
	})
}

// coalesce is what the kernel reads from writeVnet's gathered write of a
// run: merged headers, then the payloads. It returns the length in out.
func coalesce(out []byte, frames [][]byte, offset int, segs []seg) int {
	n := merge(out, frames[0][offset:], segs)
	for i := range segs {
		n += copy(out[n:], frames[i][offset+segs[i].hdr:offset+segs[i].end])
	}
	return n
}

// superOf is the super-frame (virtio header first, n bytes, in a buffer
// from superPool) that coalescing the run segs of frames gives, parsed.
func superOf(t testing.TB, frames [][]byte, offset int, segs []seg) (*[]byte, int, seg) {
	t.Helper()
	bp := superPool.Get().(*[]byte)
	n := coalesce(*bp, frames, offset, segs)
	s, ok := parse((*bp)[vnetHdrLen:n])
	if !ok {
		t.Fatal("super-frame not parsed")
	}
	return bp, n, s
}

// mustSeg parses a frame that must be mergeable, with a valid checksum.
func mustSeg(t testing.TB, f []byte) seg {
	t.Helper()
	s, ok := parse(f)
	if !ok || !s.mergeable(f) || !csumOK(f, &s) {
		t.Fatalf("frame not parsed, not mergeable or invalid: %x", f)
	}
	return s
}

// runOf is writeVnet's run from frames[0].
func runOf(t testing.TB, frames [][]byte, offset int) (int, []seg) {
	t.Helper()
	return run(frames, offset, 0, mustSeg(t, frames[0][offset:]), nil)
}
