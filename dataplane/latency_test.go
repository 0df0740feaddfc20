package dataplane

import (
	"testing"

	"github.com/l2tpu/l2tpu/encap"
)

// TestTurnaround: the answer the stack gives to a frame written to a TAP (an
// echo reply) is sent by the writer, the receive path, at once: with and
// without sequencing; and never with NoTurnaround, where the transmit loop
// sends it (the positive control: traffic passes either way).
func TestTurnaround(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tuning Tuning
		seq    bool
		want   bool // turnaround sends expected on B, the answering side
	}{
		{"default", Tuning{}, false, true},
		{"default seq", Tuning{}, true, true},
		{"no-turnaround", Tuning{NoTurnaround: true}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var ms [2]*Manager
			for i, ns := range [2]string{e.a.Path(), e.b.Path()} {
				m, err := New(Options{NetNS: ns, Tuning: tc.tuning})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close(true) })
				ms[i] = m
			}
			c := combo{encap: encap.EncapUDP, l2spec: encap.L2SpecDefault, seqBoth: tc.seq}
			ifa, ifb := addPair(t, ms[0], ms[1], c)
			up(t, e.a, ifa, "203.0.113.1/24")
			up(t, e.b, ifb, "203.0.113.2/24")
			if err := ping(e.a, "203.0.113.2", 20, 20); err != nil {
				t.Fatal(err)
			}
			turn := ms[1].turnHits.Load()
			t.Logf("frames sent by the turnaround on B: %d", turn)
			if (turn > 0) != tc.want {
				t.Errorf("turnaround sends %d, want them: %v", turn, tc.want)
			}
			for _, m := range ms {
				if st := m.Sessions()[0].Stats; st.RxErrors != 0 || st.RxSeqDiscards != 0 || st.TxErrors != 0 || st.RxPackets < 20 || st.TxPackets < 20 {
					t.Errorf("counters: %+v", st)
				}
			}
		})
	}
}
