package dataplane

// Following the session interfaces as l2tp_eth does: their MTU, renames
// and deletion (rtnetlink events, and a re-read when events were lost),
// and their carrier, off while a tunnel's local address is gone.

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/l2tpu/l2tpu/tap"
)

// onLink follows a session interface as the kernel's l2tp_eth does: its MTU
// bounds received frames, deleting it deletes the session, and a rename is
// what show reports.
func (m *Manager) onLink(ev tap.LinkEvent) {
	s := m.byIndex.get(ev.Index)
	if s == nil {
		return
	}
	if !ev.Deleted {
		if ev.MTU > 0 {
			s.setMTU(ev.MTU)
		}
		if ev.Name == "" || ev.Name == s.name() {
			return
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.byIndex.get(ev.Index) != s {
		return // removed by the Manager itself meanwhile
	}
	id := Change{TunnelID: s.cfg.TunnelID, SessionID: s.cfg.SessionID}
	if ev.Deleted {
		id.Op = SessionDeleted
		if err := m.record(id); err != nil {
			m.log.Error("interface deleted: cannot record the session's deletion", "interface", s.name(), "err", err)
		}
		m.removeSession(s, false)
		m.log.Info("session deleted with its interface", "tunnel_id", id.TunnelID, "session_id", id.SessionID, "interface", s.name())
		return
	}
	id.Op, id.Interface = SessionRenamed, ev.Name
	if err := m.record(id); err != nil {
		m.log.Error("interface renamed: cannot record it", "from", s.name(), "to", ev.Name, "err", err)
	}
	m.log.Info("session interface renamed", "tunnel_id", id.TunnelID, "session_id", id.SessionID, "from", s.name(), "to", ev.Name)
	s.ifname.Store(&ev.Name)
}

// resyncLinks re-reads every session's interface after lost link events.
// Deletions and renames among the lost events are found by asking
// rtnetlink about each session's interface.
func (m *Manager) resyncLinks() {
	var evs []tap.LinkEvent
	m.mu.Lock()
	err := m.inNS(func() error {
		for _, t := range m.tunnels {
			for _, s := range t.sessions.all() {
				ev, err := m.readLink(s)
				switch {
				case errors.Is(err, syscall.ENODEV):
					evs = append(evs, tap.LinkEvent{Index: s.ifindex, Deleted: true})
				case err != nil:
					m.log.Warn("link resync: cannot read a session's interface", "interface", s.name(), "err", err)
				case ev.Name != s.name():
					evs = append(evs, ev)
				}
			}
		}
		return nil
	})
	m.mu.Unlock()
	if err != nil {
		m.log.Error("link resync: interface MTU, deletions and renames lost meanwhile are not followed", "err", err)
	}
	for _, ev := range evs {
		m.onLink(ev)
	}
}

// readLink re-reads a session's interface (inside the namespace): its name,
// in the event, and its MTU, applied at once. Only an interface gone by its
// index is gone (ENODEV); reading the MTU by a name that was just changed
// fails, and then the MTU waits for the rename's own event.
func (m *Manager) readLink(s *session) (tap.LinkEvent, error) {
	info, err := m.host.Links.Info(s.ifindex)
	if err != nil {
		return tap.LinkEvent{}, err
	}
	ev := tap.LinkEvent{Index: s.ifindex, Name: info.Name}
	if st, err := m.host.Links.State(info.Name); err == nil {
		s.setMTU(st.MTU)
		ev.MTU, ev.Up = st.MTU, st.Up
	}
	return ev, nil
}

// setInitialCarrier gives a session's new or adopted interface the carrier
// its tunnel calls for (RefreshCarrier).
func (m *Manager) setInitialCarrier(t *tunnel, dev tap.Device, adopted bool) {
	on := !t.noAddr
	if !adopted && on {
		return // opening or attaching turned it on
	}
	// Adopted: the keeper turned it off when the last process died.
	// Without the tunnel's address: off again before the interface is
	// configured.
	if err := dev.SetCarrier(on); err != nil {
		m.log.Warn("cannot set the carrier", "interface", dev.Name(), "on", on, "err", err)
	}
}

// RefreshCarrier makes each session interface's carrier say whether its
// tunnel can carry traffic: off while the tunnel's local address is on no
// interface of the namespace (removed after the tunnel was made), on
// otherwise, so that bridges and routing daemons see a dead pseudowire.
// A daemon calls it on address changes. (A session whose restore is
// pending has no process behind its TAP, so its carrier is off already.)
func (m *Manager) RefreshCarrier() error {
	var have map[netip.Addr]bool
	err := m.inNS(func() error {
		addrs, err := m.host.Links.Addrs()
		if err != nil {
			return err
		}
		have = make(map[netip.Addr]bool, len(addrs))
		for _, a := range addrs {
			have[a] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("carrier: list addresses: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, t := range m.tunnels {
		l := t.cfg.Local.Unmap()
		noAddr := l.IsValid() && !l.IsUnspecified() && !have[l]
		if noAddr == t.noAddr {
			continue
		}
		t.noAddr = noAddr
		if noAddr {
			m.log.Warn("tunnel cannot carry traffic: its local address is gone; carrier off", "tunnel_id", t.cfg.TunnelID, "local", l)
		} else {
			m.log.Info("tunnel's local address is back; carrier on", "tunnel_id", t.cfg.TunnelID, "local", l)
		}
		for _, s := range t.sessions.all() {
			if err := s.dev.SetCarrier(!noAddr); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
