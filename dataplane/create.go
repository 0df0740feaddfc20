package dataplane

// Creating tunnels (their sockets) and sessions (their interfaces), with
// the kernel's checks.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/tap"
)

// AddTunnel creates a tunnel: for UDP a socket bound to local:udp_sport and
// connected to remote:udp_dport; for IP a raw socket bound and connected
// likewise, plus the namespace's protocol-115 listener.
func (m *Manager) AddTunnel(c TunnelConfig) error { return m.addTunnel(c, true) }

func (m *Manager) addTunnel(c TunnelConfig, record bool) error {
	if err := c.Validate(); err != nil {
		return err
	}
	c.Local, c.Remote = c.Local.Unmap(), c.Remote.Unmap()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, ok := m.tunnels[c.TunnelID]; ok {
		return fmt.Errorf("tunnel %d: %w", c.TunnelID, ErrTunnelExists)
	}
	t := &tunnel{cfg: c}
	// A restore adopts the socket a keeper held (the frames that came
	// meanwhile are in it); a new tunnel makes its own, after the keeper
	// let go of any stale one of its ID.
	kept := m.take(keptTunnel(c.TunnelID))
	if kept != nil && record {
		kept.Close()
		kept = nil
		m.drop(keptTunnel(c.TunnelID))
	}
	err := m.inNS(func() (err error) {
		if c.Encap == encap.EncapUDP {
			local, remote := netip.AddrPortFrom(c.Local, c.UDPSourcePort), netip.AddrPortFrom(c.Remote, c.UDPDestPort)
			o := conn.UDPOptions{Csum4: c.UDPCsum, ZeroCsum6Tx: c.UDP6ZeroCsumTx, ZeroCsum6Rx: c.UDP6ZeroCsumRx, GSO: !m.opt.NoGSO, GRO: !m.opt.NoGRO}
			if kept != nil {
				if t.conn, err = conn.AdoptUDP(kept, local, remote, o); err == nil {
					return nil
				}
				m.log.Warn("cannot adopt the kept socket: opening another", "tunnel_id", c.TunnelID, "err", err)
				m.drop(keptTunnel(c.TunnelID))
				kept = nil
			}
			t.conn, err = m.host.DialUDP(local, remote, o)
			return err
		}
		if kept != nil {
			if t.conn, err = conn.AdoptIP(kept, c.Local, c.Remote); err != nil {
				m.log.Warn("cannot adopt the kept socket: opening another", "tunnel_id", c.TunnelID, "err", err)
				m.drop(keptTunnel(c.TunnelID))
				kept = nil
			}
		}
		if t.conn == nil {
			if t.conn, err = m.host.DialIP(c.Local, c.Remote, conn.IPOptions{Proto115: m.opt.IPProto115}); err != nil {
				return needRaw(err)
			}
		}
		if err := m.holdIPListener(c.IPv6()); err != nil {
			t.conn.Close()
			return needRaw(err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("tunnel %d: %w", c.TunnelID, err)
	}
	if c.Encap == encap.EncapUDP && !m.rxPaused {
		if err := t.serve(m); err != nil {
			t.conn.Close()
			return fmt.Errorf("tunnel %d: %w", c.TunnelID, err)
		}
	}
	m.tunnels[c.TunnelID] = t
	if record {
		if err := m.record(Change{Op: TunnelAdded, Tunnel: c}); err != nil {
			m.removeTunnel(t, true)
			return fmt.Errorf("tunnel %d: %w", c.TunnelID, err)
		}
	}
	if kept == nil {
		m.keep(keptTunnel(c.TunnelID), t.conn.File)
	}
	m.log.Info("tunnel added", "tunnel_id", c.TunnelID, "encap", c.Encap.String(), "local", c.Local, "remote", c.Remote)
	return nil
}

// needRaw says what a raw socket refused for want of privilege needs.
func needRaw(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (%v)", ErrNeedRaw, err)
	}
	return err
}

// AddSession creates a session and its TAP interface (named Name, or
// l2tpethN with the lowest free N), with the kernel's MTU for the path to
// the peer, down, with a random locally administered MAC (as l2tp_eth).
// It returns the interface name.
func (m *Manager) AddSession(c SessionConfig) (string, error) {
	return m.addSession(c, nil)
}

func (m *Manager) addSession(c SessionConfig, r *Restore) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", ErrClosed
	}
	t, ok := m.tunnels[c.TunnelID]
	if !ok {
		return "", fmt.Errorf("tunnel %d: %w", c.TunnelID, ErrNoTunnel)
	}
	if err := m.checkSessionID(t, c.SessionID); err != nil {
		return "", err
	}
	wire := c.wire(t.cfg.Encap)
	s := &session{m: m, cfg: c, t: t, tx: encap.NewTxHeader(&wire), rx: encap.NewRxHeader(&wire),
		hasL2S: c.L2Spec == encap.L2SpecDefault,
		seq:    encap.NewSeq[*held](encap.SeqConfig{SendSeq: c.SendSeq, RecvSeq: c.RecvSeq, ReorderTimeout: c.ReorderTimeout})}
	s.mtu = wire.DefaultMTU(t.conn.PathMTU(), t.cfg.IPv6())
	var adopted bool // the queues a keeper held
	err := m.inNS(func() (err error) {
		adopted, err = m.openInterface(s, r)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("session %d in tunnel %d: %w", c.SessionID, c.TunnelID, err)
	}
	if r != nil {
		s.seq.SetNextNS(r.NextNS)
	}
	s.setMTU(s.mtu)
	m.byIndex.set(s.ifindex, s)
	// Events between creation and registration.
	if err := m.inNS(func() error { _, err := m.readLink(s); return err }); err != nil {
		m.log.Warn("cannot re-read the new session's interface: its MTU is the one set", "interface", s.name(), "err", err)
	}
	t.sessions.set(c.SessionID, s)
	if t.cfg.Encap == encap.EncapIP {
		m.ipSessions.set(c.SessionID, s)
	}
	undo := func(err error) (string, error) {
		m.unregister(s)
		s.stop(true)
		return "", fmt.Errorf("session %d in tunnel %d: %w", c.SessionID, c.TunnelID, err)
	}
	if err := s.start(); err != nil {
		return undo(err)
	}
	if r == nil {
		if err := m.record(Change{Op: SessionAdded, Session: c, Interface: s.name(), Index: s.ifindex}); err != nil {
			return undo(err)
		}
	}
	if m.opt.PersistTAP {
		if err := s.dev.SetPersist(true); err != nil {
			if r == nil {
				if rerr := m.record(Change{Op: SessionDeleted, TunnelID: c.TunnelID, SessionID: c.SessionID}); rerr != nil {
					m.log.Error("cannot record the undoing of a session", "err", rerr)
				}
			}
			return undo(err)
		}
	}
	if !adopted {
		for i, q := range s.queues {
			m.keep(keptQueue(s.ifindex, i), func() (*os.File, error) { return tap.File(q) })
		}
	}
	m.log.Info("session added", "tunnel_id", c.TunnelID, "session_id", c.SessionID, "interface", s.name(), "mtu", s.mtu, "queues", len(s.queues),
		"adopted", adopted)
	return s.name(), nil
}

// ifaceTarget is the interface a session is to have: a name (or pattern)
// to create, or an existing interface to attach to.
type ifaceTarget struct {
	name   string
	attach bool
	index  int // of the interface attached to, where known
}

// chooseInterface says which interface a session gets (inside the
// namespace): a new one named as asked (l2tpethN by default) that must not
// exist yet, or, for a restore, the recorded one (restoreTarget).
func (m *Manager) chooseInterface(c *SessionConfig, r *Restore) (ifaceTarget, error) {
	switch {
	case r != nil:
		name, index, attach, err := m.restoreTarget(r)
		return ifaceTarget{name: name, attach: attach, index: index}, err
	case c.Name == "":
		return ifaceTarget{name: "l2tpeth%d"}, nil
	}
	if _, err := m.host.Links.Index(c.Name); err == nil {
		return ifaceTarget{}, fmt.Errorf("interface %s: %w", c.Name, ErrNameExists)
	}
	return ifaceTarget{name: c.Name}, nil
}

// openInterface gives s its TAP queues, name, index and MTU (inside the
// namespace): the queues a keeper held for a restore (adopted), else an
// interface opened or attached to as chooseInterface says. A new
// interface gets s.mtu; an attached one keeps its own, the
// administrator's. A new interface is made persistent only once recorded
// (addSession): if the process dies before, the kernel removes it.
func (m *Manager) openInterface(s *session, r *Restore) (adopted bool, err error) {
	var qs []tap.Device
	if r != nil {
		qs = m.adoptQueues(r.Index)
	}
	target := ifaceTarget{attach: true}
	if qs == nil {
		if target, err = m.chooseInterface(&s.cfg, r); err != nil {
			return false, err
		}
		qs, err = m.host.OpenTAP(m.tapConfig(target.name, target.attach))
		if target.attach && errors.Is(err, syscall.EBUSY) {
			// A single-queue device with its queue taken (rtnetlink
			// counts only a multi-queue device's queues).
			if m.byIndex.get(target.index) != nil {
				return false, ErrInterfaceGone
			}
			return false, ErrInterfaceBusy
		}
		if err != nil {
			return false, err
		}
	} else {
		adopted = true
	}
	dev := qs[0]
	s.dev, s.queues = dev, qs
	m.setInitialCarrier(s.t, dev, adopted)
	ifname := dev.Name()
	s.ifname.Store(&ifname)
	closeAll := func() {
		for _, q := range qs[1:] {
			q.Close()
		}
		if target.attach {
			dev.Close()
		} else {
			dev.Remove()
		}
	}
	if target.attach {
		if st, err := m.host.Links.State(ifname); err == nil {
			s.mtu = st.MTU // the administrator's, kept
		}
	} else if err := dev.SetMTU(s.mtu); err != nil {
		closeAll()
		return false, err
	}
	if s.ifindex, err = dev.Index(); err != nil {
		closeAll()
		return false, err
	}
	return adopted, nil
}

func (m *Manager) tapConfig(name string, attach bool) tap.Config {
	return tap.Config{Name: name, Persist: attach, Attach: attach, Backend: m.opt.TAPBackend,
		VnetHdr: !m.opt.NoTAPGRO, TSO: !m.opt.NoTSO, Queues: m.opt.TAPQueues, Owner: m.opt.Owner}
}

// checkSessionID applies the kernel's uniqueness rules: unique within the
// tunnel; unique in the namespace when either session is IP-encapsulated;
// repeatable across UDP tunnels.
func (m *Manager) checkSessionID(t *tunnel, id uint32) error {
	if t.lookup(id) != nil {
		return fmt.Errorf("session %d in tunnel %d: %w", id, t.cfg.TunnelID, ErrSessionExists)
	}
	for _, o := range m.tunnels {
		if o != t && o.lookup(id) != nil && (o.cfg.Encap == encap.EncapIP || t.cfg.Encap == encap.EncapIP) {
			return fmt.Errorf("session %d (in IP-encapsulated tunnel use): %w", id, ErrSessionExists)
		}
	}
	return nil
}
