package tap

import (
	"net"
	"net/netip"
)

// Links reads and follows the interfaces of a network namespace: what the
// data path asks of the host besides its TAP devices. HostLinks are the
// real ones; tap/taptest has an in-memory one.
type Links interface {
	// Index is the index of the interface named name.
	Index(name string) (int, error)
	// Info is what rtnetlink tells of the TUN/TAP device with this
	// index (ErrNotTun for another kind of interface).
	Info(index int) (TunInfo, error)
	// State is an interface's MTU and administrative state.
	State(name string) (LinkState, error)
	// Addrs are the addresses of every interface.
	Addrs() ([]netip.Addr, error)
	// Monitor follows link changes until it is closed.
	Monitor() (LinkMonitor, error)
}

// LinkMonitor reports interface changes (Monitor is the rtnetlink one).
type LinkMonitor interface {
	// Run calls fn for every change until Close, and then returns nil;
	// resync when changes may have been lost.
	Run(fn func(LinkEvent), resync func()) error
	Close() error
}

// HostLinks are the links of the namespace of the calling thread: ioctls
// and rtnetlink.
type HostLinks struct{}

var (
	_ Links       = HostLinks{}
	_ LinkMonitor = (*Monitor)(nil)
)

func (HostLinks) Index(name string) (int, error)       { return InterfaceIndex(name) }
func (HostLinks) Info(index int) (TunInfo, error)      { return Info(index) }
func (HostLinks) State(name string) (LinkState, error) { return State(name) }
func (HostLinks) Monitor() (LinkMonitor, error)        { return NewMonitor() }

func (HostLinks) Addrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}
