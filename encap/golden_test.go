package encap_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/l2tpu/l2tpu/encap"
)

// vector is one pcap captured from the Linux kernel by ../shared/kpeer, with
// the parameters its name and the kpeer README give.
type vector struct {
	path   string
	kernel encap.Session // the kernel's session (what it sends and expects)
	peer   encap.Session // the other side's mirror image
	kaddr  netip.Addr    // the kernel's outer address
	seq    bool          // kseq-*: the kernel sends sequence numbers
	rawL2S bool          // the peer (QEMU counter=on) writes a raw counter in the sublayer
	csumOn bool          // kernel udp_csum on
}

// extras maps kpeer's extra vectors to the matrix parameters they deviate
// from (../shared/kpeer/results/extras.tsv).
var extras = map[string]string{
	"x-seq-send.pcap":           "udp-v4-c0-l2def-seqnone.pcap",
	"x-qemu-counter-count.pcap": "udp-v4-c0-l2def-seqnone.pcap",
	"x-udp-csum-on.pcap":        "udp-v4-c0-l2none-seqnone.pcap",
	"x-udp6-csum-rx-off.pcap":   "udp-v6-c0-l2none-seqnone.pcap",
	"x-ip6-cookie8-l2def.pcap":  "ip-v6-c8-l2def-seqnone.pcap",
}

var vecName = regexp.MustCompile(`^(kseq-)?(udp|ip)-v([46])-c([048])-l2(none|def)-seq(none|both)\.pcap$`)

func loadVectors(t *testing.T) []vector {
	t.Helper()
	paths, err := filepath.Glob("testdata/vectors/*.pcap")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	var vs []vector
	for _, p := range paths {
		name := filepath.Base(p)
		if e, ok := extras[name]; ok {
			name = e
		}
		m := vecName.FindStringSubmatch(name)
		if m == nil {
			t.Fatalf("unexpected vector name %s", p)
		}
		v := vector{path: p, seq: m[1] != "",
			rawL2S: strings.Contains(p, "counter-count"), csumOn: strings.Contains(p, "csum-on")}
		k := &v.kernel
		if m[2] == "ip" {
			k.Encap = encap.EncapIP
		}
		if m[5] == "def" {
			k.L2Spec = encap.L2SpecDefault
		}
		if v.seq {
			// kpeer README: seq both, cookie 0102030405060708 sent, a1a2a3a4b1b2b3b4
			// expected, session 2002 sent, 1001 expected.
			k.SessionID, k.PeerSessionID = 1001, 2002
			k.Cookie = encap.MustParseCookie("0102030405060708")
			k.PeerCookie = encap.MustParseCookie("a1a2a3a4b1b2b3b4")
		} else {
			// Matrix: kernel expects 0x1a2b3c4d, sends 0x5e6f7081; cookies
			// c0c1c2c3[c4c5c6c7] sent, d0d1d2d3[d4d5d6d7] expected.
			k.SessionID, k.PeerSessionID = 0x1a2b3c4d, 0x5e6f7081
			switch m[4] {
			case "4":
				k.Cookie, k.PeerCookie = encap.MustParseCookie("c0c1c2c3"), encap.MustParseCookie("d0d1d2d3")
			case "8":
				k.Cookie, k.PeerCookie = encap.MustParseCookie("c0c1c2c3c4c5c6c7"), encap.MustParseCookie("d0d1d2d3d4d5d6d7")
			}
		}
		v.peer = encap.Session{Encap: k.Encap, L2Spec: k.L2Spec,
			SessionID: k.PeerSessionID, PeerSessionID: k.SessionID, Cookie: k.PeerCookie, PeerCookie: k.Cookie}
		if m[3] == "4" {
			v.kaddr = netip.MustParseAddr("192.0.2.2")
		} else {
			v.kaddr = netip.MustParseAddr("2001:db8:a::2")
		}
		vs = append(vs, v)
	}
	return vs
}

// l2tpMessage is one captured L2TP message: the bytes after the UDP header
// (UDP encap) or after the IP header (IP encap).
type l2tpMessage struct {
	src      netip.Addr
	msg      []byte
	udp      *layers.UDP
	ipv4     *layers.IPv4
	fragment bool
}

func readMessages(t *testing.T, path string) []l2tpMessage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []l2tpMessage
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		// Decode only down to the transport: the L2TP layer is under test.
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.DecodeOptions{NoCopy: true, Lazy: true})
		var m l2tpMessage
		switch ip := p.NetworkLayer().(type) {
		case *layers.IPv4:
			m.src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
			m.ipv4 = ip
			m.fragment = ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0
			if ip.Protocol == layers.IPProtocolUDP {
				if u, ok := p.TransportLayer().(*layers.UDP); ok {
					m.udp, m.msg = u, u.Payload
				}
			} else if ip.Protocol == encap.IPProto {
				m.msg = ip.Payload
			}
		case *layers.IPv6:
			m.src, _ = netip.AddrFromSlice(ip.SrcIP)
			if ip.NextHeader == layers.IPProtocolUDP {
				if u, ok := p.TransportLayer().(*layers.UDP); ok {
					m.udp, m.msg = u, u.Payload
				}
			} else if ip.NextHeader == encap.IPProto {
				m.msg = ip.Payload
			}
		}
		if m.msg != nil && !m.fragment {
			out = append(out, m)
		}
	}
	return out
}

// TestGoldenKernelVectors decodes every L2TP packet the kernel (and QEMU,
// its peer in the matrix vectors) sent, then encodes the decoded frame with
// the sender's parameters and requires the very same bytes.
func TestGoldenKernelVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(strings.TrimSuffix(filepath.Base(v.path), ".pcap"), func(t *testing.T) {
			msgs := readMessages(t, v.path)
			fromKernel, fromPeer := 0, 0
			var lastNS uint32
			for i, m := range msgs {
				sender, receiver := &v.peer, &v.kernel
				if m.src == v.kaddr {
					sender, receiver = &v.kernel, &v.peer
					fromKernel++
				} else {
					fromPeer++
				}
				sid, ver, r := encap.Peek(sender.Encap, m.msg)
				if r != encap.OK || sid != sender.PeerSessionID {
					t.Fatalf("packet %d: peek = %#x, %v; want %#x, ok", i, sid, r, sender.PeerSessionID)
				}
				rx := encap.NewRxHeader(receiver)
				d, r := rx.Decode(m.msg, ver)
				if r != encap.OK {
					t.Fatalf("packet %d: decode = %v", i, r)
				}
				if d.Offset != sender.TxHeaderLen() {
					t.Fatalf("packet %d: frame offset %d, want %d", i, d.Offset, sender.TxHeaderLen())
				}
				frame := m.msg[d.Offset:]
				eth := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
				if eth.ErrorLayer() != nil {
					t.Fatalf("packet %d: frame is not Ethernet: %v", i, eth.ErrorLayer().Error())
				}
				if sender == &v.kernel && v.seq {
					if !d.HasSeq {
						t.Fatalf("packet %d: kernel with seq both sent no sequence number", i)
					}
					if fromKernel > 1 && d.NS != (lastNS+1)&encap.SeqMask {
						t.Fatalf("packet %d: ns %d after %d", i, d.NS, lastNS)
					}
					lastNS = d.NS
				} else if d.HasSeq {
					t.Fatalf("packet %d: unexpected S bit", i)
				}
				tx := encap.NewTxHeader(sender)
				l2ss := encap.SublayerWord(d.HasSeq, d.NS)
				if sender == &v.peer && v.rawL2S {
					l2ss = binary.BigEndian.Uint32(m.msg[d.Offset-4:])
				}
				got := tx.Append(nil, l2ss, frame)
				if !bytes.Equal(got, m.msg) {
					t.Fatalf("packet %d: encoded\n%x\nkernel sent\n%x", i, got, m.msg)
				}
				// Outer facts the dataplane must reproduce (reference §2.7).
				if sender == &v.kernel && !v.csumOn && m.udp != nil && m.ipv4 != nil && m.udp.Checksum != 0 {
					t.Errorf("packet %d: kernel UDP/IPv4 checksum %#x, want 0 (udp_csum off)", i, m.udp.Checksum)
				}
				if sender == &v.kernel && m.ipv4 != nil && m.ipv4.Flags&layers.IPv4DontFragment != 0 {
					t.Errorf("packet %d: kernel set DF", i)
				}
			}
			if fromKernel == 0 || (!v.seq && fromPeer == 0) {
				t.Fatalf("vector has %d kernel and %d peer packets", fromKernel, fromPeer)
			}
			t.Logf("%d kernel + %d peer packets byte-identical", fromKernel, fromPeer)
		})
	}
}

// TestGoldenSeqFromStart encodes the kseq vectors' kernel packets with a
// fresh Seq (send_seq on) and requires the kernel's exact sublayer words:
// ns counts from 0 at session creation, one per sent packet.
func TestGoldenSeqFromStart(t *testing.T) {
	for _, v := range loadVectors(t) {
		if !v.seq {
			continue
		}
		t.Run(filepath.Base(v.path), func(t *testing.T) {
			s := encap.NewSeq[int](encap.SeqConfig{SendSeq: true, RecvSeq: true})
			tx := encap.NewTxHeader(&v.kernel)
			rx := encap.NewRxHeader(&v.peer)
			n := 0
			for _, m := range readMessages(t, v.path) {
				if m.src != v.kaddr {
					continue
				}
				d, r := rx.Decode(m.msg, encap.Version3)
				if r != encap.OK {
					t.Fatal(r)
				}
				if n == 0 {
					// The capture starts a few packets after session
					// creation; the kernel's ns started at 0 there. Send
					// (and drop) that many first.
					if d.NS > 16 {
						t.Fatalf("capture starts at ns %d", d.NS)
					}
					for i := uint32(0); i < d.NS; i++ {
						s.NextSublayer()
					}
				}
				buf := make([]byte, tx.Len())
				tx.Put(buf, s.NextSublayer())
				if !bytes.Equal(buf, m.msg[:tx.Len()]) {
					t.Fatalf("packet %d: header %x, kernel %x", n, buf, m.msg[:tx.Len()])
				}
				n++
			}
			t.Logf("%d sequenced headers identical from ns 0", n)
		})
	}
}
