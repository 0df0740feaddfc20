package dataplane

// What show reports: tunnels and sessions with their counters.

import (
	"cmp"
	"slices"
)

// TunnelInfo is a tunnel as `show tunnel` reports it.
type TunnelInfo struct {
	Config TunnelConfig
	Stats  Stats
	// ICMPErrors: errors ICMP messages left on the tunnel's socket, each
	// consumed by a read or send that was then made again (the kernel's tunnels
	// ignore them): not one of the kernel's counters, so not in show.
	ICMPErrors uint64 `json:"icmp_errors,omitempty"`
}

// SessionInfo is a session as `show session` reports it. SendSeq and
// RecvSeq are the current values (send_seq follows the peer in LAC mode).
type SessionInfo struct {
	Config       SessionConfig
	PeerTunnelID uint32
	Interface    string
	MTU          int // at creation
	SendSeq      bool
	RecvSeq      bool
	NextNS       uint32 // sequence number to send next
	Stats        Stats
}

// Tunnels lists the tunnels in ascending tunnel ID order.
func (m *Manager) Tunnels() []TunnelInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]TunnelInfo, 0, len(m.tunnels))
	for _, t := range m.tunnels {
		out = append(out, TunnelInfo{Config: t.cfg, Stats: t.stats.snapshot(), ICMPErrors: t.conn.ICMPErrors()})
	}
	slices.SortFunc(out, func(a, b TunnelInfo) int { return cmp.Compare(a.Config.TunnelID, b.Config.TunnelID) })
	return out
}

// Sessions lists the sessions in ascending (tunnel ID, session ID) order.
func (m *Manager) Sessions() []SessionInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SessionInfo
	for _, t := range m.tunnels {
		for _, s := range t.sessions.all() {
			out = append(out, SessionInfo{Config: s.cfg, PeerTunnelID: t.cfg.PeerTunnelID, Interface: s.name(),
				MTU: s.mtu, SendSeq: s.seq.SendSeq(), RecvSeq: s.seq.RecvSeq(), NextNS: s.seq.NextNS(), Stats: s.stats.snapshot()})
		}
	}
	slices.SortFunc(out, func(a, b SessionInfo) int {
		if c := cmp.Compare(a.Config.TunnelID, b.Config.TunnelID); c != 0 {
			return c
		}
		return cmp.Compare(a.Config.SessionID, b.Config.SessionID)
	})
	return out
}

// EachNextNS calls fn with the next transmit sequence number of every
// session that numbers what it sends: cheap enough to run every second with
// thousands of sessions (no allocation, no sorting).
func (m *Manager) EachNextNS(fn func(tunnelID, sessionID, nextNS uint32)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tunnels {
		for _, s := range t.sessions.all() {
			if s.seq.SendSeq() {
				fn(t.cfg.TunnelID, s.cfg.SessionID, s.seq.NextNS())
			}
		}
	}
}
