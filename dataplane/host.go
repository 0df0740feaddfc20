package dataplane

import (
	"net/netip"

	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/tap"
)

// Host is what a Manager opens and asks of the system, each called inside
// Options.NetNS: TAP devices, tunnel sockets and the namespace's links. A
// nil field is the real one (packages tap and conn); tests inject the
// in-memory ones of tap/taptest and conn/conntest, as wireguard-go's
// NewDevice takes a tun.Device and a conn.Bind.
type Host struct {
	// OpenTAP creates or attaches to a session's TAP device, one Device
	// for each queue (tap.OpenQueues).
	OpenTAP func(tap.Config) ([]tap.Device, error)
	// DialUDP opens a UDP tunnel's socket (conn.DialUDP).
	DialUDP func(local, remote netip.AddrPort, o conn.UDPOptions) (conn.Conn, error)
	// DialIP opens an IP tunnel's transmit socket (conn.DialIP).
	DialIP func(local, remote netip.Addr, o conn.IPOptions) (conn.Conn, error)
	// ListenIP opens the namespace's protocol-115 listener, from which
	// every IP tunnel's messages are read (conn.ListenIP).
	ListenIP func(v6 bool) (conn.Reader, func() error, error)
	// Links reads and follows the namespace's interfaces (tap.HostLinks).
	Links tap.Links
}

// withDefaults fills the nil fields with the real ones.
func (h Host) withDefaults() Host {
	if h.OpenTAP == nil {
		h.OpenTAP = tap.OpenQueues
	}
	if h.DialUDP == nil {
		h.DialUDP = conn.DialUDP
	}
	if h.DialIP == nil {
		h.DialIP = conn.DialIP
	}
	if h.ListenIP == nil {
		h.ListenIP = conn.ListenIP
	}
	if h.Links == nil {
		h.Links = tap.HostLinks{}
	}
	return h
}
