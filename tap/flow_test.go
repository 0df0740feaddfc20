package tap

import (
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/l2tpu/l2tpu/internal/fixture"
)

// TestFlowHash: the frames of one flow hash alike whatever their payload,
// IP ID or TCP sequence; flows that differ in a port, an address or the
// protocol hash apart; TCP is told from the rest; VLAN-tagged frames and
// non-IP frames are flows too.
func TestFlowHash(t *testing.T) {
	seed := NewFlowSeed()
	for _, v6 := range []bool{false, true} {
		for _, vlan := range []bool{false, true} {
			tcps := tcpFrames(t, v6, vlan, 3, 1000, 0)
			h0, isTCP := FlowHash(seed, tcps[0])
			if !isTCP {
				t.Fatalf("v6 %v vlan %v: TCP not told", v6, vlan)
			}
			for i, f := range tcps[1:] {
				if h, _ := FlowHash(seed, f); h != h0 {
					t.Fatalf("v6 %v vlan %v: segment %d of one TCP flow hashes apart", v6, vlan, i+1)
				}
			}
			u1 := udpFrameOf(t, v6, vlan, true, 1, 40000, []byte("one"))
			u2 := udpFrameOf(t, v6, vlan, true, 2, 40000, []byte("another payload"))
			u3 := udpFrameOf(t, v6, vlan, true, 1, 40001, []byte("one"))
			h1, isTCP := FlowHash(seed, u1)
			if isTCP {
				t.Fatal("UDP taken for TCP")
			}
			if h2, _ := FlowHash(seed, u2); h2 != h1 {
				t.Fatalf("v6 %v vlan %v: one UDP flow hashes apart", v6, vlan)
			}
			if h3, _ := FlowHash(seed, u3); h3 == h1 {
				t.Fatalf("v6 %v vlan %v: UDP flows of two source ports hash alike", v6, vlan)
			}
			if h1 == h0 {
				t.Fatal("a TCP and a UDP flow hash alike")
			}
			icmp := append([]byte(nil), u1...) // the same addresses and ports, another protocol
			off, _, _ := l3(icmp)
			if v6 {
				icmp[off+6] = byte(layers.IPProtocolICMPv6)
			} else {
				icmp[off+9] = byte(layers.IPProtocolICMPv4)
			}
			if h, isTCP := FlowHash(seed, icmp); h == h1 || isTCP {
				t.Fatalf("v6 %v vlan %v: ICMP hashes as the UDP flow, or as TCP", v6, vlan)
			}
		}
	}
	a, b := fixture.Frame(1, 60), fixture.Frame(2, 60)
	ha, _ := FlowHash(seed, a)
	if hb, _ := FlowHash(seed, b); hb != ha {
		t.Fatal("non-IP frames of one source and EtherType hash apart")
	}
	b[11]++ // another source
	if hb, _ := FlowHash(seed, b); hb == ha {
		t.Fatal("non-IP frames of two sources hash alike")
	}
	if h, _ := FlowHash(NewFlowSeed(), a); h == ha {
		t.Fatal("two seeds hash alike")
	}
	FlowHash(seed, a[:5]) // short: no panic
}
