// Package taptest is an in-memory network namespace of TAP devices for
// tests of the data path without root: Net opens devices (as tap.OpenQueues)
// and answers for its links (tap.Links), and a test plays the kernel's
// stack behind each device: Send hands the data path a frame the stack
// sent out of the interface, Recv takes one the data path delivered.
package taptest

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/internal/memq"
	"github.com/l2tpu/l2tpu/tap"
)

// Net is the namespace: its devices and addresses.
type Net struct {
	mu       sync.Mutex
	next     int
	byIndex  map[int]*Device
	addrs    []netip.Addr
	monitors map[*monitor]bool
}

// NewNet is an empty namespace with these addresses (tap.Links.Addrs).
func NewNet(addrs ...netip.Addr) *Net {
	return &Net{next: 100, byIndex: map[int]*Device{}, addrs: addrs, monitors: map[*monitor]bool{}}
}

var _ tap.Links = (*Net)(nil)

// Open is tap.OpenQueues: one Device (queue) for each of c.Queues, named
// c.Name, where %d is the lowest free number.
func (n *Net) Open(c tap.Config) ([]tap.Device, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := c.Name
	if c.Attach {
		d := n.byName(name)
		switch {
		case d == nil:
			return nil, fmt.Errorf("taptest: attach %s: %w", name, syscall.ENODEV)
		case d.attached:
			return nil, fmt.Errorf("taptest: attach %s: %w", name, syscall.EBUSY)
		}
		if err := d.open(); err != nil {
			return nil, err
		}
		d.attached = true
		d.setCarrier(true) // attaching a queue turns it on, as in the kernel
		return []tap.Device{d}, nil
	}
	if c.Queues > 1 {
		return nil, errors.New("taptest: one queue only")
	}
	if strings.Contains(name, "%d") { // the lowest free number, as the kernel
		for i := 0; ; i++ {
			if cand := fmt.Sprintf(name, i); n.byName(cand) == nil {
				name = cand
				break
			}
		}
	} else if n.byName(name) != nil {
		return nil, fmt.Errorf("taptest: %s: %w", name, syscall.EEXIST)
	}
	d := &Device{net: n, name: name, index: n.next, mtu: 1500, attached: true, owner: -1, carrier: true}
	if c.Owner != nil {
		d.owner = c.Owner.UID
	}
	if err := d.open(); err != nil {
		return nil, err
	}
	n.next++
	n.byIndex[d.index] = d
	return []tap.Device{d}, nil
}

func (n *Net) byName(name string) *Device {
	for _, d := range n.byIndex {
		if d.name == name {
			return d
		}
	}
	return nil
}

// Device returns the device named name, or nil.
func (n *Net) Device(name string) *Device {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byName(name)
}

// Index is tap.Links.Index.
func (n *Net) Index(name string) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if d := n.byName(name); d != nil {
		return d.index, nil
	}
	return 0, fmt.Errorf("interface %s: %w", name, syscall.ENODEV)
}

// Info is tap.Links.Info.
func (n *Net) Info(index int) (tap.TunInfo, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.byIndex[index]
	if d == nil {
		return tap.TunInfo{Owner: -1}, syscall.ENODEV
	}
	q := 0
	if d.attached {
		q = 1
	}
	return tap.TunInfo{Name: d.name, Owner: d.owner, Queues: q, Tap: true}, nil
}

// State is tap.Links.State.
func (n *Net) State(name string) (tap.LinkState, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.byName(name)
	if d == nil {
		return tap.LinkState{}, syscall.ENODEV
	}
	return tap.LinkState{MTU: d.mtu, Up: true}, nil
}

// Addrs is tap.Links.Addrs.
func (n *Net) Addrs() ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]netip.Addr(nil), n.addrs...), nil
}

// SetAddrs replaces the namespace's addresses.
func (n *Net) SetAddrs(addrs ...netip.Addr) {
	n.mu.Lock()
	n.addrs = addrs
	n.mu.Unlock()
}

// Monitor is tap.Links.Monitor: it reports what Rename, SetLinkMTU and
// Delete do.
func (n *Net) Monitor() (tap.LinkMonitor, error) {
	m := &monitor{n: n, ev: make(chan tap.LinkEvent, 64), done: make(chan struct{})}
	n.mu.Lock()
	n.monitors[m] = true
	n.mu.Unlock()
	return m, nil
}

// event reports ev to every monitor (n.mu held).
func (n *Net) event(ev tap.LinkEvent) {
	for m := range n.monitors {
		m.ev <- ev
	}
}

// Rename renames the device as `ip link set NAME name TO` does.
func (n *Net) Rename(name, to string) error {
	return n.change(name, func(d *Device) tap.LinkEvent {
		d.name = to
		return tap.LinkEvent{Index: d.index, Name: to, MTU: d.mtu, Up: true}
	})
}

// SetLinkMTU sets the device's MTU as `ip link set NAME mtu MTU` does.
func (n *Net) SetLinkMTU(name string, mtu int) error {
	return n.change(name, func(d *Device) tap.LinkEvent {
		d.mtu = mtu
		return tap.LinkEvent{Index: d.index, Name: d.name, MTU: mtu, Up: true}
	})
}

// Delete deletes the device as `ip link del NAME` does.
func (n *Net) Delete(name string) error {
	return n.change(name, func(d *Device) tap.LinkEvent {
		n.remove(d)
		return tap.LinkEvent{Index: d.index, Name: d.name, Deleted: true}
	})
}

// change applies fn to the device named name and reports its event.
func (n *Net) change(name string, fn func(*Device) tap.LinkEvent) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.byName(name)
	if d == nil {
		return fmt.Errorf("taptest: %s: %w", name, syscall.ENODEV)
	}
	n.event(fn(d))
	return nil
}

func (n *Net) remove(d *Device) {
	delete(n.byIndex, d.index)
	d.gone = true
}

type monitor struct {
	n    *Net
	ev   chan tap.LinkEvent
	done chan struct{}
	once sync.Once
}

func (m *monitor) Run(fn func(tap.LinkEvent), resync func()) error {
	for {
		select {
		case ev := <-m.ev:
			fn(ev)
		case <-m.done:
			return nil
		}
	}
}

func (m *monitor) Close() error {
	m.once.Do(func() {
		m.n.mu.Lock()
		delete(m.n.monitors, m)
		m.n.mu.Unlock()
		close(m.done)
	})
	return nil
}

// Device is one TAP device with one queue. The frames the stack sends
// (Send) wait to be read by the data path, and the frames the data path
// writes wait for Recv, each in a memq.Queue (its eventfd is the PollFD).
type Device struct {
	net *Net

	mu        sync.Mutex
	out       *memq.Queue // sent by the stack, for the data path to Read
	delivered *memq.Queue // written by the data path, for Recv
	persist   bool
	carrier   bool
	written   atomic.Uint64
	discard   atomic.Bool

	// Under net.mu.
	name     string
	index    int
	mtu      int
	owner    int // tap.Config.Owner's UID, -1 for none
	attached bool
	gone     bool
}

var _ tap.Device = (*Device)(nil)

// QueueLimit is how many frames wait in each direction (more are dropped).
const QueueLimit = 8192

// open gives the device a fresh queue (opened, or attached to again).
func (d *Device) open() error {
	out, err := memq.New(QueueLimit)
	if err != nil {
		return err
	}
	delivered, err := memq.New(QueueLimit)
	if err != nil {
		out.Close()
		return err
	}
	d.mu.Lock()
	d.out, d.delivered = out, delivered
	d.mu.Unlock()
	return nil
}

func (d *Device) queues() (out, delivered *memq.Queue) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out, d.delivered
}

// Send queues frames as the stack sending them out of the interface.
func (d *Device) Send(frames ...[]byte) { out, _ := d.queues(); out.Push(frames...) }

// Recv is the next frame the data path delivered to the stack, or false
// after timeout.
func (d *Device) Recv(timeout time.Duration) ([]byte, bool) {
	_, dl := d.queues()
	return dl.Pop(timeout)
}

// Delivered is how many delivered frames wait for Recv.
func (d *Device) Delivered() int { _, dl := d.queues(); return dl.Len() }

// Carrier and Persistent report what the data path set.
func (d *Device) Carrier() bool    { d.mu.Lock(); defer d.mu.Unlock(); return d.carrier }
func (d *Device) Persistent() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.persist }

// MTU is the device's MTU.
func (d *Device) MTU() int { d.net.mu.Lock(); defer d.net.mu.Unlock(); return d.mtu }

func (d *Device) Name() string {
	d.net.mu.Lock()
	defer d.net.mu.Unlock()
	return d.name
}

func (d *Device) Index() (int, error) {
	d.net.mu.Lock()
	defer d.net.mu.Unlock()
	if d.gone {
		return 0, syscall.ENODEV
	}
	return d.index, nil
}

func (d *Device) SetMTU(mtu int) error {
	d.net.mu.Lock()
	defer d.net.mu.Unlock()
	d.mtu = mtu
	return nil
}

func (d *Device) PollFD() int     { out, _ := d.queues(); return out.FD() }
func (d *Device) WaitRead() error { out, _ := d.queues(); return out.Wait() }

func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	out, _ := d.queues()
	return out.Read(bufs, sizes, offset)
}

func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	d.written.Add(uint64(len(bufs)))
	if d.discard.Load() {
		return len(bufs), nil
	}
	_, dl := d.queues()
	for _, b := range bufs {
		dl.Push(b[offset:]) // a full backlog drops, as the stack's does
	}
	return len(bufs), nil
}

// Written is how many frames the data path wrote.
func (d *Device) Written() uint64 { return d.written.Load() }

// Discard makes the device count what is written without keeping it (a
// benchmark's sink).
func (d *Device) Discard() { d.discard.Store(true) }

// Close detaches: a device not made persistent disappears.
func (d *Device) Close() error {
	d.mu.Lock()
	persist := d.persist
	err := d.out.Close()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.net.mu.Lock()
	defer d.net.mu.Unlock()
	d.attached = false
	d.setCarrier(false) // no queue: no carrier
	if !persist && !d.gone {
		d.net.remove(d)
		d.net.event(tap.LinkEvent{Index: d.index, Name: d.name, Deleted: true})
	}
	return nil
}

func (d *Device) setCarrier(on bool) {
	d.mu.Lock()
	d.carrier = on
	d.mu.Unlock()
}

// Remove deletes the interface even when persistent.
func (d *Device) Remove() error {
	d.mu.Lock()
	d.persist = false
	d.mu.Unlock()
	d.Close()
	return nil
}

func (d *Device) SetCarrier(on bool) error { d.setCarrier(on); return nil }

func (d *Device) SetPersist(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.persist = on
	return nil
}
