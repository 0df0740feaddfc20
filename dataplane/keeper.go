package dataplane

import (
	"fmt"
	"os"

	"github.com/l2tpu/l2tpu/conn"
)

// Keeper holds the descriptors a restart needs (tunnel sockets, TAP
// queues, the IP listeners) outside the process, as the kernel holds its
// sockets whatever happens to a process: after a crash no other user can
// take a tunnel's port, and the next process adopts the very sockets and
// queues, with the frames that arrived meanwhile still queued in them.
// The daemon's keeper process is one (package daemon).
type Keeper interface {
	// Keep hands f (which the Keeper then owns) to the keeper under name,
	// replacing what it held under that name.
	Keep(name string, f *os.File) error
	// Take returns the descriptor the keeper held under name when this
	// process started, or nil; the caller owns it. The keeper still holds
	// its own.
	Take(name string) *os.File
	// Drop makes the keeper close what it holds under name; it has once
	// Drop returns (a port is free again, an interface gone).
	Drop(name string) error
}

// Names under which the Manager keeps descriptors.
func keptTunnel(id uint32) string     { return fmt.Sprintf("tunnel/%d", id) }
func keptQueue(ifindex, q int) string { return fmt.Sprintf("tap/%d/%d", ifindex, q) }
func keptListener(v6 bool) string {
	if v6 {
		return "ip/6"
	}
	return "ip/4"
}

// KeptQueueName is the name under which queue q of the interface with
// index ifindex is kept.
func KeptQueueName(ifindex, q int) string { return keptQueue(ifindex, q) }

// KeptKind is what a kept descriptor is.
type KeptKind uint8

const (
	KeptTunnel   KeptKind = iota + 1 // a tunnel's socket; the ID is the tunnel's
	KeptQueue                        // a session's TAP queue; the ID is the interface index
	KeptListener                     // an IP listener; the ID is 4 or 6
)

// ParseKept says what the descriptor kept under name is for: a daemon drops
// what its restored state does not name (left by a change cut short by a
// crash).
func ParseKept(name string) (kind KeptKind, id int, ok bool) {
	var q int
	if n, _ := fmt.Sscanf(name, "tunnel/%d", &id); n == 1 && name == keptTunnel(uint32(id)) {
		return KeptTunnel, id, true
	}
	if n, _ := fmt.Sscanf(name, "tap/%d/%d", &id, &q); n == 2 && name == keptQueue(id, q) {
		return KeptQueue, id, true
	}
	switch name {
	case keptListener(false):
		return KeptListener, 4, true
	case keptListener(true):
		return KeptListener, 6, true
	}
	return 0, 0, false
}

// keep hands a duplicate of a socket or queue to the Keeper; failing that
// the object still works, only not across a crash: logged.
func (m *Manager) keep(name string, file func() (*os.File, error)) {
	if m.opt.Keeper == nil {
		return
	}
	f, err := file()
	if err == nil {
		err = m.opt.Keeper.Keep(name, f)
	}
	if err != nil {
		m.log.Warn("cannot keep a descriptor across a crash: a restart will open it again", "name", name, "err", err)
	}
}

// take is the Keeper's descriptor for name, or nil.
func (m *Manager) take(name string) *os.File {
	if m.opt.Keeper == nil {
		return nil
	}
	return m.opt.Keeper.Take(name)
}

// drop makes the Keeper close name.
func (m *Manager) drop(name string) {
	if m.opt.Keeper == nil {
		return
	}
	if err := m.opt.Keeper.Drop(name); err != nil {
		m.log.Error("keeper: cannot drop a descriptor", "name", name, "err", err)
	}
}

// connFile duplicates a Reader's descriptor (every conn socket has one).
func connFile(r conn.Reader) func() (*os.File, error) {
	return func() (*os.File, error) {
		f, ok := r.(interface{ File() (*os.File, error) })
		if !ok {
			return nil, fmt.Errorf("%T has no descriptor to keep", r)
		}
		return f.File()
	}
}
