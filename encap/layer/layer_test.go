package layer

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/l2tpu/l2tpu/encap"
)

// kseqKernel is the kernel's session in the kseq-* vectors (kpeer README).
func kseqKernel(t testing.TB, e encap.Encap) encap.Session {
	return encap.Session{Encap: e, SessionID: 1001, PeerSessionID: 2002, L2Spec: encap.L2SpecDefault,
		Cookie: encap.MustParseCookie("0102030405060708"), PeerCookie: encap.MustParseCookie("a1a2a3a4b1b2b3b4")}
}

func readPcap(t *testing.T, name string) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", "vectors", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			return out
		}
		out = append(out, data)
	}
}

// TestRegisteredDecoding: with the layer registered, gopacket itself
// decodes the kernel's packets as Ethernet/IP/UDP/L2TPv3/Ethernet/...
// Register changes gopacket's process-wide tables: the only test that
// calls it.
func TestRegisteredDecoding(t *testing.T) {
	table := NewTable()
	for _, e := range []encap.Encap{encap.EncapUDP, encap.EncapIP} {
		k := kseqKernel(t, e)
		table.AddSession(&k)
	}
	Register(table, 1701)
	for _, name := range []string{"kseq-udp-v4-c8-l2def-seqboth.pcap", "kseq-udp-v6-c8-l2def-seqboth.pcap",
		"kseq-ip-v4-c8-l2def-seqboth.pcap", "kseq-ip-v6-c8-l2def-seqboth.pcap"} {
		t.Run(name, func(t *testing.T) {
			var prev uint32
			n := 0
			for i, data := range readPcap(t, name) {
				p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
				l := Get(p)
				if l == nil {
					continue // not L2TP (none in these vectors, but be exact)
				}
				if p.ErrorLayer() != nil {
					t.Fatalf("packet %d: %v", i, p.ErrorLayer().Error())
				}
				wantType := LayerTypeL2TPv3
				if strings.HasPrefix(name, "kseq-ip") {
					wantType = LayerTypeL2TPv3IP
				}
				if l.LayerType() != wantType || l.SessionID != 2002 || !bytes.Equal(l.Cookie, []byte{1, 2, 3, 4, 5, 6, 7, 8}) || !l.HasSeq() {
					t.Fatalf("packet %d: %+v", i, l)
				}
				if l.Control() || l.Version() != 3 {
					t.Fatalf("packet %d: control %v version %d", i, l.Control(), l.Version())
				}
				if n > 0 && l.Seq() != prev+1 {
					t.Fatalf("packet %d: seq %d after %d", i, l.Seq(), prev)
				}
				prev = l.Seq()
				// The inner frame decodes too: two Ethernet layers.
				var eths int
				for _, ly := range p.Layers() {
					if ly.LayerType() == layers.LayerTypeEthernet {
						eths++
					}
				}
				if eths != 2 {
					t.Fatalf("packet %d: %d Ethernet layers: %v", i, eths, p)
				}
				n++
			}
			if n == 0 {
				t.Fatal("no L2TPv3 packets decoded")
			}
		})
	}
}

// TestSerializeMatchesKernel rebuilds each kernel packet of the kseq UDP
// vectors with gopacket (Ethernet/IP/UDP/L2TPv3 + inner frame) from the
// session parameters and the decoded inner frame, and requires the
// kernel's bytes; for IPv4 the ID is taken from the capture.
func TestSerializeMatchesKernel(t *testing.T) {
	for _, name := range []string{"kseq-udp-v4-c8-l2def-seqboth.pcap", "kseq-udp-v6-c8-l2def-seqboth.pcap", "kseq-ip-v4-c8-l2def-seqboth.pcap"} {
		t.Run(name, func(t *testing.T) {
			e := encap.EncapUDP
			if strings.HasPrefix(name, "kseq-ip") {
				e = encap.EncapIP
			}
			k := kseqKernel(t, e)
			table := NewTable().AddSession(&k)
			for i, data := range readPcap(t, name) {
				// Decode with a local table through DecodingLayerParser:
				// no process-wide state.
				var (
					eth  layers.Ethernet
					ip4  layers.IPv4
					ip6  layers.IPv6
					udp  layers.UDP
					l2tp = L2TPv3{Encap: e, Table: table}
				)
				first := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.NoCopy)
				var msg []byte
				switch ip := first.NetworkLayer().(type) {
				case *layers.IPv4:
					ip4 = *ip
					msg = ip.Payload
				case *layers.IPv6:
					ip6 = *ip
					msg = ip.Payload
				}
				if u, ok := first.TransportLayer().(*layers.UDP); ok {
					udp = *u
					msg = u.Payload
				}
				if err := l2tp.DecodeFromBytes(msg, gopacket.NilDecodeFeedback); err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				_ = eth.DecodeFromBytes(data, gopacket.NilDecodeFeedback)

				// Now build it from scratch.
				hdr := ForSession(&k, encap.SublayerWord(true, l2tp.Seq()))
				outEth := layers.Ethernet{SrcMAC: eth.SrcMAC, DstMAC: eth.DstMAC, EthernetType: eth.EthernetType}
				opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
				buf := gopacket.NewSerializeBuffer()
				var ls []gopacket.SerializableLayer
				ls = append(ls, &outEth)
				if ip4.Version == 4 {
					proto := layers.IPProtocol(encap.IPProto)
					if e == encap.EncapUDP {
						proto = layers.IPProtocolUDP
					}
					ls = append(ls, &layers.IPv4{Version: 4, IHL: 5, Id: ip4.Id, TTL: 64, Protocol: proto,
						SrcIP: ip4.SrcIP, DstIP: ip4.DstIP})
				} else {
					ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
						SrcIP: ip6.SrcIP, DstIP: ip6.DstIP, FlowLabel: ip6.FlowLabel}
					ls = append(ls, ip)
				}
				if e == encap.EncapUDP {
					u := &layers.UDP{SrcPort: udp.SrcPort, DstPort: udp.DstPort}
					if ip4.Version == 4 {
						opts.ComputeChecksums = false // kernel default: udp_csum off, checksum 0
					} else {
						_ = u.SetNetworkLayerForChecksum(ls[1].(gopacket.NetworkLayer))
					}
					ls = append(ls, u)
				}
				ls = append(ls, hdr, gopacket.Payload(l2tp.Payload))
				if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
					t.Fatal(err)
				}
				got := buf.Bytes()
				if ip4.Version == 4 && !opts.ComputeChecksums {
					// The IPv4 header checksum is the only field left.
					got[14+10], got[14+11] = data[14+10], data[14+11]
				}
				if ip6.Version == 6 && e == encap.EncapUDP {
					// The VM's virtio-net offloads the checksum: the capture
					// on its TAP holds only the pseudo-header sum
					// (CHECKSUM_PARTIAL), which the host completes later.
					off := 14 + 40 + 6
					if want := pseudoSum(ip6.SrcIP, ip6.DstIP, len(data)-14-40); uint16(data[off])<<8|uint16(data[off+1]) != want {
						t.Fatalf("packet %d: capture checksum is neither full nor partial", i)
					}
					got[off], got[off+1] = data[off], data[off+1]
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("packet %d:\n got %x\nwant %x", i, got, data)
				}
			}
		})
	}
}

// pseudoSum is the folded, uncomplemented IPv6 UDP pseudo-header sum.
func pseudoSum(src, dst []byte, n int) uint16 {
	var s uint32
	for _, b := range [][]byte{src, dst, {byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), 0, 0, 0, 17}} {
		for i := 0; i < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestDecodeErrors(t *testing.T) {
	table := NewTable().Add(5, Entry{CookieLen: 4, L2Spec: encap.L2SpecDefault})
	for _, tc := range []struct {
		e    encap.Encap
		b    []byte
		t    *Table
		want string
	}{
		{encap.EncapUDP, []byte{0, 3}, table, "too short"},
		{encap.EncapUDP, []byte{0, 3, 0, 0, 0, 0}, table, "too short"},
		{encap.EncapUDP, []byte{0, 3, 0, 0, 0, 0, 0, 6}, table, "not in the table"},
		{encap.EncapIP, []byte{0, 0, 0, 5, 1, 2, 3, 4, 0, 0}, table, "too short"},
		{encap.EncapIP, []byte{0, 0, 0, 5}, nil, "no session table"},
	} {
		l := L2TPv3{Encap: tc.e, Table: tc.t}
		err := l.DecodeFromBytes(tc.b, gopacket.NilDecodeFeedback)
		if tc.t == nil && registered.Load() != nil {
			continue // another test registered a table
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%x: %v, want %q", tc.b, err, tc.want)
		}
	}
	// Control messages decode without a table lookup.
	l := L2TPv3{Encap: encap.EncapUDP, Table: table}
	if err := l.DecodeFromBytes([]byte{0xc8, 3, 0, 20, 0, 0, 0, 1}, gopacket.NilDecodeFeedback); err != nil || !l.Control() || l.NextLayerType() != gopacket.LayerTypePayload {
		t.Errorf("udp control: %v %+v", err, l)
	}
	l = L2TPv3{Encap: encap.EncapIP, Table: table}
	if err := l.DecodeFromBytes([]byte{0, 0, 0, 0, 0xc8, 3}, gopacket.NilDecodeFeedback); err != nil || !l.Control() {
		t.Errorf("ip control: %v %+v", err, l)
	}
}

// FuzzLayer: decoding never panics, and what decodes serializes back to the
// same bytes.
func FuzzLayer(f *testing.F) {
	f.Add(false, []byte{0, 3, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 0x40, 0, 0, 1, 0xff})
	f.Add(true, []byte{0, 0, 0, 5, 1, 2, 3, 4, 0, 0, 0, 0})
	f.Add(true, []byte{0, 0, 0, 0, 0xc8, 3})
	f.Add(false, []byte{0x80, 3, 0, 0})
	table := NewTable().Add(5, Entry{CookieLen: 4, L2Spec: encap.L2SpecDefault}).Add(6, Entry{CookieLen: 8})
	f.Fuzz(func(t *testing.T, ip bool, b []byte) {
		e := encap.EncapUDP
		if ip {
			e = encap.EncapIP
		}
		l := L2TPv3{Encap: e, Table: table}
		if err := l.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
			return
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, &l, gopacket.Payload(l.Payload)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), b) {
			t.Fatalf("round trip %x -> %x", b, buf.Bytes())
		}
	})
}
