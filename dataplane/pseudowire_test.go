package dataplane

import (
	"fmt"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// TestPseudowireMatrix runs a pseudowire between two l2tpu dataplanes for
// every encapsulation, family, cookie size, sublayer and seq none/both:
// ping both ways and a TCP transfer. seq both without a sublayer cannot
// carry sequence numbers: as with the kernel, every packet is then dropped
// and counted in rx_seq_discards.
func TestPseudowireMatrix(t *testing.T) {
	e := newEnv(t)
	ma, mb := newManager(t, e.a), newManager(t, e.b)
	for _, enc := range []encap.Encap{encap.EncapUDP, encap.EncapIP} {
		for _, v6 := range []bool{false, true} {
			for _, ck := range []int{0, 4, 8} {
				for _, l2 := range []encap.L2Spec{encap.L2SpecNone, encap.L2SpecDefault} {
					for _, seq := range []bool{false, true} {
						c := combo{encap: enc, v6: v6, cookie: ck, l2spec: l2, seqBoth: seq}
						t.Run(c.String(), func(t *testing.T) { runCombo(t, e, ma, mb, c) })
					}
				}
			}
		}
	}
}

// addPair adds combo c's tunnel and session on both managers (deleted when
// the test ends) and returns the two interfaces.
func addPair(t *testing.T, ma, mb *Manager, c combo) (string, string) {
	t.Helper()
	ta, tb := tunnelPair(c.encap, c.v6)
	if err := ma.AddTunnel(ta); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ma.DeleteTunnel(ta.TunnelID) })
	if err := mb.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.DeleteTunnel(tb.TunnelID) })
	sa, sb := sessionPair(t, c)
	ifa, err := ma.AddSession(sa)
	if err != nil {
		t.Fatal(err)
	}
	ifb, err := mb.AddSession(sb)
	if err != nil {
		t.Fatal(err)
	}
	return ifa, ifb
}

func runCombo(t *testing.T, e *env, ma, mb *Manager, c combo) {
	ifa, ifb := addPair(t, ma, mb, c)
	up(t, e.a, ifa, "203.0.113.1/24")
	up(t, e.b, ifb, "203.0.113.2/24")

	if c.seqBoth && c.l2spec == encap.L2SpecNone {
		if err := ping(e.a, "203.0.113.2", 3, 1); err == nil {
			t.Fatal("seq both without a sublayer passed traffic")
		}
		st := mb.Sessions()[0].Stats
		if st.RxSeqDiscards == 0 || st.RxPackets != 0 || st.RxSeqDiscards != st.RxErrors {
			t.Fatalf("want every packet in rx_seq_discards: %+v", st)
		}
		return
	}
	if err := ping(e.a, "203.0.113.2", 3, 2); err != nil {
		t.Fatal(err)
	}
	if err := ping(e.b, "203.0.113.1", 3, 2); err != nil {
		t.Fatal(err)
	}
	tcpTransfer(t, e.a, e.b, "203.0.113.2:5001", 1<<20)
	tcpTransfer(t, e.b, e.a, "203.0.113.1:5001", 256<<10)
	for _, m := range []*Manager{ma, mb} {
		s := m.Sessions()[0]
		st := s.Stats
		if st.TxPackets == 0 || st.RxPackets == 0 || st.RxErrors != 0 || st.RxCookieDiscards != 0 || st.TxErrors != 0 {
			t.Fatalf("%s: %+v", s.Interface, st)
		}
		if s.SendSeq != c.seqBoth || s.RecvSeq != c.seqBoth {
			t.Fatalf("seq state send=%v recv=%v", s.SendSeq, s.RecvSeq)
		}
		// One session per tunnel: the tunnel's counters equal the
		// session's once the last segments are through.
		privtest.Eventually(t, 3*time.Second, func() error {
			tst, sst := m.Tunnels()[0].Stats, m.Sessions()[0].Stats
			if tst.RxPackets != sst.RxPackets || tst.RxBytes != sst.RxBytes || tst.TxPackets != sst.TxPackets || tst.TxBytes != sst.TxBytes {
				return fmt.Errorf("tunnel %+v vs session %+v", tst, sst)
			}
			return nil
		})
	}
}
