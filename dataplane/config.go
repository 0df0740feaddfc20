package dataplane

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/l2tpu/l2tpu/encap"
)

// TunnelConfig is `ip l2tp add tunnel`. The zero values of the checksum
// fields are ip l2tp's defaults.
type TunnelConfig struct {
	TunnelID                   uint32
	PeerTunnelID               uint32
	Encap                      encap.Encap // EncapUDP is ip l2tp's default
	Local                      netip.Addr
	Remote                     netip.Addr
	UDPSourcePort, UDPDestPort uint16 // UDP only
	UDPCsum                    bool   // IPv4 UDP: send checksums (udp_csum on)
	UDP6ZeroCsumTx             bool   // IPv6 UDP: send checksum 0 (udp6_csum_tx off)
	UDP6ZeroCsumRx             bool   // IPv6 UDP: accept checksum 0 (udp6_csum_rx off)
}

// Validate checks what the kernel checks before creating anything.
func (c *TunnelConfig) Validate() error {
	switch {
	case c.TunnelID == 0 || c.PeerTunnelID == 0:
		return fmt.Errorf("tunnel_id and peer_tunnel_id must be non-zero: %w", ErrInvalid)
	case c.Encap != encap.EncapUDP && c.Encap != encap.EncapIP:
		return fmt.Errorf("encap must be udp or ip: %w", ErrInvalid)
	case !c.Local.IsValid() || !c.Remote.IsValid():
		return fmt.Errorf("local and remote addresses are required: %w", ErrInvalid)
	case c.Local.Unmap().Is4() != c.Remote.Unmap().Is4():
		return fmt.Errorf("local %s and remote %s must be of one family: %w", c.Local, c.Remote, ErrInvalid)
	case c.Encap == encap.EncapUDP && (c.UDPSourcePort == 0 || c.UDPDestPort == 0):
		return fmt.Errorf("udp_sport and udp_dport are required with UDP encapsulation: %w", ErrInvalid)
	}
	return nil
}

// IPv6 reports whether the tunnel runs over IPv6.
func (c *TunnelConfig) IPv6() bool { return !c.Local.Unmap().Is4() }

// SessionConfig is `ip l2tp add session` plus reorder_timeout. Note that
// ip l2tp's default sublayer is encap.L2SpecDefault, not the zero value.
type SessionConfig struct {
	TunnelID       uint32
	SessionID      uint32
	PeerSessionID  uint32
	Name           string // interface name; "" means l2tpeth%d
	Cookie         encap.Cookie
	PeerCookie     encap.Cookie
	L2Spec         encap.L2Spec
	SendSeq        bool
	RecvSeq        bool
	ReorderTimeout time.Duration
}

// MaxReorderTimeout is the longest reorder_timeout: what ip l2tp's 32-bit
// millisecond count can say.
const MaxReorderTimeout = 0xffffffff * time.Millisecond

// Validate checks what the kernel checks before creating anything.
func (c *SessionConfig) Validate() error {
	if c.TunnelID == 0 {
		return fmt.Errorf("tunnel_id must be non-zero: %w", ErrInvalid)
	}
	if c.ReorderTimeout < 0 || c.ReorderTimeout > MaxReorderTimeout {
		return fmt.Errorf("reorder_timeout must be from 0 to %d ms: %w", MaxReorderTimeout/time.Millisecond, ErrInvalid)
	}
	if c.Name != "" && !validIfName(c.Name) {
		return fmt.Errorf("interface name %q: %w", c.Name, ErrInvalid)
	}
	s := c.wire(encap.EncapUDP)
	if err := s.Validate(); err != nil {
		return fmt.Errorf("%v: %w", err, ErrInvalid)
	}
	return nil
}

func (c *SessionConfig) wire(e encap.Encap) encap.Session {
	return encap.Session{Encap: e, SessionID: c.SessionID, PeerSessionID: c.PeerSessionID,
		Cookie: c.Cookie, PeerCookie: c.PeerCookie, L2Spec: c.L2Spec}
}

// validIfName is the kernel's dev_valid_name.
func validIfName(s string) bool {
	if s == "" || len(s) >= 16 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || r == ' ' || r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r' {
			return false
		}
	}
	return true
}
