package dataplane

import (
	"fmt"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/encap"
)

// TestMultiQueuePseudowire: session TAPs with three queues, each read by
// its own loop; eight TCP flows at once (spread over the queues by the
// kernel) arrive intact. With sequence numbers the queues share one
// numbering in wire order: the receivers see nothing out of sequence. The
// reorder timeout makes that checkable: without one the kernel's rules
// count nothing in rx_oos_packets (TestReorderTimeout shows it counting).
func TestMultiQueuePseudowire(t *testing.T) {
	e := newEnv(t)
	ma, err := New(Options{NetNS: e.a.Path(), Tuning: Tuning{TAPQueues: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Close(true)
	mb, err := New(Options{NetNS: e.b.Path(), Tuning: Tuning{TAPQueues: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close(true)
	for _, seq := range []bool{false, true} {
		c := combo{encap: encap.EncapUDP, cookie: 4, l2spec: encap.L2SpecDefault, seqBoth: seq}
		if seq {
			c.reorder = 200 * time.Millisecond
		}
		t.Run(c.String(), func(t *testing.T) {
			ifa, ifb := addPair(t, ma, mb, c)
			for _, m := range []*Manager{ma, mb} {
				m.mu.Lock()
				for _, tn := range m.tunnels {
					for _, s := range tn.sessions.all() {
						if len(s.queues) != 3 {
							t.Errorf("%s: %d queues", s.name(), len(s.queues))
						}
					}
				}
				m.mu.Unlock()
			}
			up(t, e.a, ifa, "203.0.113.1/24")
			up(t, e.b, ifb, "203.0.113.2/24")
			if err := ping(e.a, "203.0.113.2", 3, 2); err != nil {
				t.Fatal(err)
			}
			t.Run("flows", func(t *testing.T) {
				for i := 0; i < 8; i++ {
					t.Run(fmt.Sprint(i), func(t *testing.T) {
						t.Parallel()
						tcpTransfer(t, e.a, e.b, fmt.Sprintf("203.0.113.2:%d", 5100+i), 512<<10)
					})
				}
			})
			for _, m := range []*Manager{ma, mb} {
				st := m.Sessions()[0].Stats
				if st.TxPackets == 0 || st.RxPackets == 0 || st.RxErrors != 0 || st.TxErrors != 0 || st.RxOOSPackets != 0 || st.RxSeqDiscards != 0 {
					t.Fatalf("%+v", st)
				}
			}
		})
	}
}
