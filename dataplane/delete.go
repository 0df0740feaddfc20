package dataplane

// Deleting tunnels and sessions, and what a deletion releases.

import (
	"fmt"
	"sync"

	"github.com/l2tpu/l2tpu/encap"
)

// DeleteTunnel deletes a tunnel and, as the kernel does, every session in
// it with its interface.
func (m *Manager) DeleteTunnel(id uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tunnels[id]
	if !ok {
		return fmt.Errorf("tunnel %d: %w", id, ErrNoTunnel)
	}
	var ss []*session
	for _, s := range t.sessions.all() {
		ss = append(ss, s)
	}
	if err := m.deleteSessions(ss, Change{Op: TunnelDeleted, TunnelID: id}); err != nil {
		return fmt.Errorf("tunnel %d: %w", id, err)
	}
	m.removeTunnel(t, true)
	m.log.Info("tunnel deleted", "tunnel_id", id)
	return nil
}

// removeTunnel closes a tunnel's socket; drop makes the keeper close its
// copy too (not when the process stops keeping its state).
func (m *Manager) removeTunnel(t *tunnel, drop bool) {
	delete(m.tunnels, t.cfg.TunnelID)
	if t.src != nil {
		if err := t.src.remove(); err != nil {
			m.log.Error("tunnel socket", "tunnel_id", t.cfg.TunnelID, "err", err)
		}
	}
	t.conn.Close()
	if drop {
		m.drop(keptTunnel(t.cfg.TunnelID))
	}
	if t.cfg.Encap == encap.EncapIP {
		m.releaseIPListener(t.cfg.IPv6())
	}
}

// DeleteSession deletes a session and its interface.
func (m *Manager) DeleteSession(tunnelID, sessionID uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tunnels[tunnelID]
	if !ok {
		return fmt.Errorf("tunnel %d: %w", tunnelID, ErrNoTunnel)
	}
	s := t.lookup(sessionID)
	if s == nil {
		return fmt.Errorf("session %d in tunnel %d: %w", sessionID, tunnelID, ErrNoSession)
	}
	err := m.deleteSessions([]*session{s}, Change{Op: SessionDeleted, TunnelID: tunnelID, SessionID: sessionID})
	if err != nil {
		return fmt.Errorf("session %d in tunnel %d: %w", sessionID, tunnelID, err)
	}
	m.log.Info("session deleted", "tunnel_id", tunnelID, "session_id", sessionID)
	return nil
}

// deleteSessions removes sessions and their interfaces once the change is
// recorded. Their interfaces stop being persistent first: a process that
// dies before the record leaves the change undone and the interfaces gone
// with it, to be made anew from the record; one that dies after leaves
// nothing behind.
func (m *Manager) deleteSessions(ss []*session, c Change) error {
	if m.opt.PersistTAP {
		for i, s := range ss {
			if err := s.dev.SetPersist(false); err != nil {
				m.repersist(ss[:i])
				return err
			}
		}
	}
	if err := m.record(c); err != nil {
		if m.opt.PersistTAP {
			m.repersist(ss)
		}
		return err
	}
	for _, s := range ss {
		m.unregister(s)
	}
	stopAll(ss, true)
	return nil
}

func (m *Manager) repersist(ss []*session) {
	for _, s := range ss {
		if err := s.dev.SetPersist(true); err != nil {
			m.log.Error("cannot make an interface persistent again", "interface", s.name(), "err", err)
		}
	}
}

// stopAll stops sessions several at a time: removing an interface waits for
// the kernel (RCU grace periods), and those waits overlap.
func stopAll(ss []*session, remove bool) {
	const parallel = 32
	if len(ss) == 1 {
		ss[0].stop(remove)
		return
	}
	var wg sync.WaitGroup
	next := make(chan *session)
	for range min(parallel, len(ss)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range next {
				s.stop(remove)
			}
		}()
	}
	for _, s := range ss {
		next <- s
	}
	close(next)
	wg.Wait()
}

// unregister takes a session out of every lookup; the data path stops
// finding it at once.
func (m *Manager) unregister(s *session) {
	t := s.t
	t.sessions.del(s.cfg.SessionID)
	if t.cfg.Encap == encap.EncapIP {
		m.ipSessions.del(s.cfg.SessionID)
	}
	m.byIndex.del(s.ifindex)
}

func (m *Manager) removeSession(s *session, removeIf bool) {
	m.unregister(s)
	s.stop(removeIf)
}
