package tap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/fixture"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

const etherTest = fixture.EtherType

func frame(i int) []byte { return fixture.Frame(i, 60+i) }

func inNS(t *testing.T, ns *privtest.NS, f func() error) {
	t.Helper()
	if err := netns.Do(ns.Path(), f); err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, ns *privtest.NS, c Config) Device {
	t.Helper()
	var d Device
	inNS(t, ns, func() (err error) { d, err = Open(c); return err })
	return d
}

func TestDevice(t *testing.T) {
	privtest.Require(t)
	for _, b := range []Backend{Water, Unix} {
		t.Run(b.String(), func(t *testing.T) {
			ns := privtest.NewNS(t, privtest.Prefix())
			// Name templates expand to the lowest free index.
			d0 := open(t, ns, Config{Name: "l2tpeth%d", Backend: b})
			d1 := open(t, ns, Config{Name: "l2tpeth%d", Backend: b})
			if d0.Name() != "l2tpeth0" || d1.Name() != "l2tpeth1" {
				t.Fatalf("names %s %s", d0.Name(), d1.Name())
			}
			d0.Close()
			d2 := open(t, ns, Config{Name: "l2tpeth%d", Backend: b})
			if d2.Name() != "l2tpeth0" {
				t.Fatalf("after close: %s", d2.Name())
			}
			defer d1.Close()
			defer d2.Close()

			inNS(t, ns, func() error {
				if err := SetMTU(d2.Name(), 1446); err != nil {
					return err
				}
				if s, err := State(d2.Name()); err != nil || s.MTU != 1446 || s.Up {
					t.Errorf("state %+v %v; want mtu 1446, down", s, err)
				}
				if err := SetUp(d2.Name(), true); err != nil {
					return err
				}
				if s, _ := State(d2.Name()); !s.Up {
					t.Error("not up")
				}
				return nil
			})
			ns.Run(t, "sysctl", "-qw", "net.ipv6.conf."+d2.Name()+".disable_ipv6=1")
			capt := privtest.NewCaptureOf(t, ns, d2.Name(), etherTest)

			// Kernel transmits 5 frames on the TAP: one WaitRead, one batch.
			for i := 0; i < 5; i++ {
				capt.Send(t, frame(i))
			}
			bufs := make([][]byte, 8)
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			sizes := make([]int, 8)
			got := 0
			deadline := time.Now().Add(5 * time.Second)
			for got < 5 && time.Now().Before(deadline) {
				if err := d2.WaitRead(); err != nil {
					t.Fatal(err)
				}
				n, err := d2.Read(bufs, sizes, 16)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < n; i++ {
					f := bufs[i][16 : 16+sizes[i]]
					if binary.BigEndian.Uint16(f[12:]) != etherTest {
						continue
					}
					if !bytes.Equal(f, frame(got)) {
						t.Fatalf("frame %d: %x", got, f)
					}
					got++
				}
			}
			if got != 5 {
				t.Fatalf("read %d of 5 frames", got)
			}

			// We write a batch of 3 frames: the kernel receives them.
			out := [][]byte{append(make([]byte, 4), frame(10)...), append(make([]byte, 4), frame(11)...), append(make([]byte, 4), frame(12)...)}
			if n, err := d2.Write(out, 4); n != 3 || err != nil {
				t.Fatalf("write %d %v", n, err)
			}
			for i := 10; i < 13; i++ {
				if f, _ := capt.Next(5 * time.Second); !bytes.Equal(f, frame(i)) {
					t.Fatalf("kernel got %x", f)
				}
			}

			// Close unblocks a waiting reader.
			done := make(chan error, 1)
			go func() { done <- d1.WaitRead() }()
			time.Sleep(50 * time.Millisecond)
			d1.Close()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("WaitRead after Close returned nil")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not unblock WaitRead")
			}
		})
	}
}

func TestPersistAndAttach(t *testing.T) {
	privtest.Require(t)
	ns := privtest.NewNS(t, privtest.Prefix())
	d := open(t, ns, Config{Name: "pw0", Persist: true})
	inNS(t, ns, func() error { return SetMTU("pw0", 1400) })
	d.Close()
	// Still there, MTU kept, after the fd is gone (a crashed daemon).
	inNS(t, ns, func() error {
		s, err := State("pw0")
		if err != nil || s.MTU != 1400 {
			t.Fatalf("after close: %+v %v", s, err)
		}
		return nil
	})
	for _, b := range []Backend{Unix, Water} {
		a := open(t, ns, Config{Name: "pw0", Persist: true, Attach: true, Backend: b})
		if a.Name() != "pw0" {
			t.Fatal(a.Name())
		}
		a.Close()
	}
	// Attach to a device that is not there is an error, not a new device.
	inNS(t, ns, func() error {
		if _, err := Open(Config{Name: "nothere0", Attach: true, Persist: true}); err == nil {
			t.Error("attached to a missing device")
		}
		if _, err := Open(Config{Name: "x", Attach: true, Backend: Water}); !errors.Is(err, ErrBackend) {
			t.Errorf("water non-persistent attach: %v", err)
		}
		return nil
	})
	a := open(t, ns, Config{Name: "pw0", Persist: true, Attach: true})
	if err := a.Remove(); err != nil {
		t.Fatal(err)
	}
	inNS(t, ns, func() error {
		if _, err := State("pw0"); err == nil {
			t.Error("pw0 still exists after Remove")
		}
		return nil
	})
}

func TestMonitor(t *testing.T) {
	privtest.Require(t)
	ns := privtest.NewNS(t, privtest.Prefix())
	var mon *Monitor
	inNS(t, ns, func() (err error) { mon, err = NewMonitor(); return err })
	events := make(chan LinkEvent, 64)
	go mon.Run(func(e LinkEvent) { events <- e }, func() {})
	defer mon.Close()
	d := open(t, ns, Config{Name: "mon0"})
	ns.Run(t, "ip", "link", "set", "mon0", "mtu", "1400", "up")
	want := func(f func(LinkEvent) bool, what string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case e := <-events:
				if e.Name == "mon0" && f(e) {
					return
				}
			case <-deadline:
				t.Fatalf("no event: %s", what)
			}
		}
	}
	want(func(e LinkEvent) bool { return e.MTU == 1400 && e.Up }, "mtu 1400, up")
	ns.Run(t, "ip", "link", "set", "mon0", "down")
	want(func(e LinkEvent) bool { return !e.Up }, "down")
	d.Close()
	want(func(e LinkEvent) bool { return e.Deleted }, "deleted")
}

func TestMultiQueue(t *testing.T) {
	privtest.Require(t)
	for _, b := range []Backend{Unix, Water} {
		t.Run(b.String(), func(t *testing.T) {
			ns := privtest.NewNS(t, privtest.Prefix())
			var qs []Device
			inNS(t, ns, func() (err error) { qs, err = OpenQueues(Config{Name: "mq%d", Queues: 3, Backend: b}); return err })
			if len(qs) != 3 || qs[0].Name() != "mq0" || qs[2].Name() != "mq0" {
				t.Fatalf("%d queues", len(qs))
			}
			for k, q := range qs {
				if f := tunFlags(t, q); f&unix.IFF_MULTI_QUEUE == 0 {
					t.Errorf("queue %d: flags %#x without IFF_MULTI_QUEUE", k, f)
				}
			}
			inNS(t, ns, func() error { return SetUp("mq0", true) })
			ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.mq0.disable_ipv6=1")
			capt := privtest.NewCaptureOf(t, ns, "mq0", etherTest)
			const flows = 64
			for i := 0; i < flows; i++ {
				capt.Send(t, udpFrameOf(t, false, false, false, 0, uint16(10000+i), make([]byte, 18)))
			}
			// Every frame arrives once, on some queue; flows are spread.
			bufs, sizes := make([][]byte, 8), make([]int, 8)
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			per := make([]int, len(qs))
			seen := map[uint16]bool{}
			privtest.Eventually(t, 5*time.Second, func() error {
				for k, q := range qs {
					n, err := q.Read(bufs, sizes, 16)
					if err != nil {
						t.Fatal(err)
					}
					for i := 0; i < n; i++ {
						f := bufs[i][16 : 16+sizes[i]]
						if len(f) >= 36 && binary.BigEndian.Uint16(f[12:]) == 0x0800 {
							seen[binary.BigEndian.Uint16(f[34:])] = true
							per[k]++
						}
					}
				}
				if len(seen) != flows {
					return fmt.Errorf("%d of %d flows read", len(seen), flows)
				}
				return nil
			})
			used := 0
			for _, n := range per {
				if n > 0 {
					used++
				}
			}
			if used < 2 || per[0]+per[1]+per[2] != flows {
				t.Fatalf("frames per queue %v", per)
			}
			// Any queue writes into the stack.
			if n, err := qs[2].Write([][]byte{append(make([]byte, 16), frame(7)...)}, 16); n != 1 || err != nil {
				t.Fatalf("write on queue 2: %d %v", n, err)
			}
			if f, _ := capt.Next(5 * time.Second); f == nil || fixture.Number(f) != 7 {
				t.Fatalf("frame from queue 2: %x", f)
			}
			for _, q := range qs {
				q.Close()
			}
			inNS(t, ns, func() error {
				if _, err := State("mq0"); err == nil {
					t.Error("mq0 still there after its last queue closed")
				}
				return nil
			})
		})
	}
}

// tunFlags asks the kernel for a queue's TUNGETIFF flags.
func tunFlags(t *testing.T, d Device) uint16 {
	t.Helper()
	var req ifreqFlags
	var err error
	d.(*fileDevice).rc.Control(func(fd uintptr) { err = ioctlPtr(int(fd), unix.TUNGETIFF, &req) })
	if err != nil {
		t.Fatal(err)
	}
	return req.flags
}

// TestMultiQueueAttach: a persistent device keeps the queue mode it was
// made with; attaching with the other one takes the device's.
func TestMultiQueueAttach(t *testing.T) {
	privtest.Require(t)
	for _, b := range []Backend{Unix, Water} {
		t.Run(b.String(), func(t *testing.T) { testMultiQueueAttach(t, b) })
	}
}

func testMultiQueueAttach(t *testing.T, b Backend) {
	ns := privtest.NewNS(t, privtest.Prefix())
	var qs []Device
	inNS(t, ns, func() (err error) { qs, err = OpenQueues(Config{Backend: b, Name: "sq0", Persist: true}); return err })
	qs[0].Close()
	inNS(t, ns, func() (err error) {
		qs, err = OpenQueues(Config{Backend: b, Name: "sq0", Persist: true, Attach: true, Queues: 3})
		return err
	})
	if len(qs) != 1 {
		t.Fatalf("single-queue device: %d queues", len(qs))
	}
	qs[0].Remove()
	inNS(t, ns, func() (err error) {
		qs, err = OpenQueues(Config{Backend: b, Name: "mq0", Persist: true, Queues: 2})
		return err
	})
	for _, q := range qs {
		q.Close()
	}
	inNS(t, ns, func() (err error) {
		qs, err = OpenQueues(Config{Backend: b, Name: "mq0", Persist: true, Attach: true})
		return err
	})
	if len(qs) != 1 || tunFlags(t, qs[0])&unix.IFF_MULTI_QUEUE == 0 {
		t.Fatalf("multi-queue device attached as %d queues", len(qs))
	}
	qs[0].Close()
	inNS(t, ns, func() (err error) {
		qs, err = OpenQueues(Config{Backend: b, Name: "mq0", Persist: true, Attach: true, Queues: 4})
		return err
	})
	if len(qs) != 4 {
		t.Fatalf("%d queues", len(qs))
	}
	for _, q := range qs[1:] {
		q.Close()
	}
	if err := qs[0].Remove(); err != nil {
		t.Fatal(err)
	}
	inNS(t, ns, func() error {
		if _, err := State("mq0"); err == nil {
			t.Error("mq0 still there after Remove")
		}
		return nil
	})
}

// TestOwnedQueues: an owned device reports its owner and queues through
// rtnetlink; a queue someone else attached makes OpenQueues fail rather
// than share the device (the positive control: alone, it opens).
func TestOwnedQueues(t *testing.T) {
	privtest.Require(t)
	ns := privtest.NewNS(t, privtest.Prefix())
	own := &Owner{UID: 0, GID: -1}
	var qs []Device
	inNS(t, ns, func() (err error) {
		qs, err = OpenQueues(Config{Backend: Unix, Name: "oq0", Persist: true, Queues: 2, Owner: own})
		return err
	})
	var info TunInfo
	inNS(t, ns, func() error {
		idx, err := InterfaceIndex("oq0")
		if err == nil {
			info, err = Info(idx)
		}
		return err
	})
	if info.Owner != 0 || info.Queues != 2 || !info.Tap || info.Name != "oq0" {
		t.Fatalf("%+v", info)
	}
	// One queue stays attached, as another process's would.
	qs[1].Close()
	other := qs[0]
	inNS(t, ns, func() error {
		_, err := OpenQueues(Config{Backend: Unix, Name: "oq0", Persist: true, Attach: true, Queues: 2, Owner: own})
		if !errors.Is(err, ErrForeignQueue) {
			t.Errorf("attach beside a foreign queue: %v", err)
		}
		return nil
	})
	other.Close()
	inNS(t, ns, func() (err error) {
		qs, err = OpenQueues(Config{Backend: Unix, Name: "oq0", Persist: true, Attach: true, Queues: 2, Owner: own})
		return err
	})
	qs[1].Close()
	if err := qs[0].Remove(); err != nil {
		t.Fatal(err)
	}
	inNS(t, ns, func() error {
		if idx, err := InterfaceIndex("lo"); err == nil {
			if _, err := Info(idx); !errors.Is(err, ErrNotTun) {
				t.Errorf("lo: %v", err)
			}
		}
		return nil
	})
}
