package conn

import (
	"bytes"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// TestFragment: fragments as the kernel cuts its own, which a decoder
// reads back into the message (no socket).
func TestFragment(t *testing.T) {
	msg := make([]byte, 3000)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	for _, v6 := range []bool{false, true} {
		hlen := 20
		if v6 {
			hlen = 40
		}
		pkt := make([]byte, hlen+len(msg))
		if v6 {
			pkt[0], pkt[6], pkt[7] = 0x60, 115, 64
			pkt[23], pkt[39] = 1, 2
		} else {
			pkt[0], pkt[8], pkt[9] = 0x45, 64, 115
			pkt[15], pkt[19] = 1, 2
		}
		copy(pkt[hlen:], msg)
		frags := fragment(pkt, v6, 1500, 0x1234abcd)
		if len(frags) != 3 {
			t.Fatalf("v6 %v: %d fragments, want 3", v6, len(frags))
		}
		var got []byte
		for i, f := range frags {
			if len(f) > 1500 {
				t.Fatalf("v6 %v: fragment %d is %d bytes", v6, i, len(f))
			}
			last := i == len(frags)-1
			if v6 {
				p := gopacket.NewPacket(f, layers.LayerTypeIPv6, gopacket.Default)
				fh, _ := p.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment)
				ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
				if fh == nil || fh.NextHeader != 115 || fh.MoreFragments == last || fh.Identification != 0x1234abcd ||
					int(fh.FragmentOffset)*8 != len(got) || int(ip.Length) != len(f)-40 || ip.HopLimit != 64 {
					t.Fatalf("v6 fragment %d: %+v %+v", i, fh, ip)
				}
				got = append(got, f[48:]...)
			} else {
				p := gopacket.NewPacket(f, layers.LayerTypeIPv4, gopacket.Default)
				ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
				mf := ip.Flags&layers.IPv4MoreFragments != 0
				if ip.Id != 0xabcd || mf == last || int(ip.FragOffset)*8 != len(got) || int(ip.Length) != len(f) ||
					ip.Protocol != 115 || ip.TTL != 64 || ip.Flags&layers.IPv4DontFragment != 0 {
					t.Fatalf("v4 fragment %d: %+v", i, ip)
				}
				got = append(got, f[20:]...)
			}
			if !last && (len(got))%8 != 0 {
				t.Fatalf("v6 %v: fragment %d ends at %d, not a multiple of 8", v6, i, len(got))
			}
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("v6 %v: reassembled %d bytes differ", v6, len(got))
		}
	}
	if fragment(make([]byte, 100), false, 24, 1) != nil {
		t.Error("an MTU with no room for 8 bytes of data gave fragments")
	}
	for _, v6 := range []bool{false, true} {
		if fragment(make([]byte, 70000), v6, 1500, 1) != nil {
			t.Errorf("v6 %v: a message longer than any datagram gave fragments", v6)
		}
		if fragment(make([]byte, 0xffff-8), v6, 1500, 1) == nil {
			t.Errorf("v6 %v: the longest datagram gave no fragments", v6)
		}
	}
}
