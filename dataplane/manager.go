// Package dataplane is the l2tpu engine: tunnels and sessions that move
// Ethernet frames between TAP devices and UDP or IP (protocol 115) sockets,
// with the Linux kernel's L2TPv3 behaviour. The CLI and daemon are thin
// layers over a Manager.
//
// Data flow: every TAP queue and tunnel socket is a source of a loop
// (loop.go), which serves ready sources one batch each, round-robin. A
// session's batch (send.go) is frames read from its TAP into pooled buffers
// with headroom, the L2TP header written in front of each, and one
// sendmmsg. A socket's batch (receive.go; for IP encapsulation the socket is
// the namespace's listener, one per address family) is a recvmmsg, each
// message classified (encap.Peek, a lock-free session lookup,
// RxHeader.Decode, the sequence rules), and the frames written to the TAPs.
package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/tap"
)

// Options configure a Manager.
type Options struct {
	// NetNS is the network namespace (a path such as /run/netns/NAME) in
	// which sockets and interfaces are created; "" is the caller's.
	NetNS string
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// PersistTAP makes session interfaces outlive the process, so a
	// restarted daemon re-attaches to them (see SessionConfig.Attach).
	PersistTAP bool
	// Tuning chooses the fast paths: what changes speed, not behaviour
	// (but for NoGSO's wire bytes).
	Tuning
	// Owner, when set, owns every session interface (tap.Owner): no other
	// user without CAP_NET_ADMIN can attach to it, even between a crash
	// and a restart.
	Owner *tap.Owner
	// Recorder, when set, makes each change durable before it is
	// reported done: see Recorder.
	Recorder Recorder
	// Keeper, when set, holds every tunnel socket and session queue
	// across a crash, and restores adopt what it held: see Keeper.
	Keeper Keeper
	// Host opens the TAPs and sockets and reads the links; the zero
	// value is the real system's.
	Host Host
}

// Tuning are the dataplane's performance choices, each a daemon flag; the
// zero value is the default (every fast path on where measured better).
type Tuning struct {
	// TAPBackend chooses how TAP devices are created.
	TAPBackend tap.Backend
	// NoGSO turns UDP GSO off: the byte-exact path. GSO needs a UDP
	// checksum on every message, so with it (the default) UDP tunnels
	// send real checksums even where the kernel sends 0 (IPv4 with
	// udp_csum off, its default; IPv6 with udp6_csum_tx off). A valid
	// checksum is accepted by every receiver; with NoGSO the wire is the
	// kernel's, checksum 0 included.
	NoGSO bool
	// NoGRO turns UDP GRO off (receive side only: no change on the wire).
	NoGRO bool
	// NoTAPGRO opens session TAPs without IFF_VNET_HDR: no coalescing of
	// received TCP segments into one write.
	NoTAPGRO bool
	// TAPQueues opens session TAPs with this many queues (IFF_MULTI_QUEUE
	// when more than one), each read by its own transmit loop: the kernel
	// spreads flows over them, so a session's flows are encapsulated on
	// several CPUs at once. 0 means 1.
	TAPQueues int
	// NoTSO keeps the TAP from handing over TCP super-frames (TSO) and
	// unchecksummed frames; without NoTAPGRO's header it is off anyway.
	NoTSO bool
	// NoTurnaround: after writing frames to a session's TAP, do not read
	// at once what the stack sent in answer (the stack answers within the
	// write: an echo reply, an ACK), leaving it to the transmit loop,
	// which then has to be woken.
	NoTurnaround bool
	// Threads is how many loops serve the sessions and tunnels (loop.go);
	// 0 means 1. Each runs Go code: GOMAXPROCS should be at least Threads.
	Threads int
	// RTPriority is the realtime priority (SCHED_FIFO, 1-99) the process's
	// threads run at, as the kernel moves frames in softirq, ahead of
	// every program (loop.go); 0 leaves them ordinary. It is process-wide:
	// the runtime moves goroutines between threads.
	RTPriority int
	// Moderation is how long a loop that moves a few frames at a time at
	// a high rate lets them gather between its rounds, as a NIC moderates
	// its interrupts (loop.go); 0: never.
	Moderation time.Duration
}

// Recorder makes configuration changes durable (a daemon's journal). The
// Manager calls Record with its lock held: for an addition after the
// tunnel or session is made and before it is reported (a persistent
// interface is made persistent only once recorded, so a process that dies
// in between leaves nothing behind); for a deletion before anything is
// removed. An error undoes the addition, or leaves the object in place,
// and the operation fails with it. Changes the kernel would make by itself
// (the interface of a session deleted or renamed behind the Manager's back)
// are recorded too; an error there is logged.
type Recorder interface {
	Record(Change) error
}

// ChangeOp says what a Change did.
type ChangeOp uint8

const (
	TunnelAdded ChangeOp = iota + 1
	TunnelDeleted
	SessionAdded
	SessionDeleted
	SessionRenamed
)

// Change is one recorded configuration change.
type Change struct {
	Op        ChangeOp
	Tunnel    TunnelConfig  // TunnelAdded
	Session   SessionConfig // SessionAdded
	Interface string        // SessionAdded, SessionRenamed: the interface's name
	Index     int           // SessionAdded: the interface's index
	TunnelID  uint32        // TunnelDeleted, SessionDeleted, SessionRenamed
	SessionID uint32        // SessionDeleted, SessionRenamed
}

// Manager owns the tunnels and sessions of one network namespace.
type Manager struct {
	turnHits atomic.Uint64 // frames sent by the turnaround (tests)
	opt      Options
	host     Host // opt.Host with its defaults
	log      *slog.Logger
	epoch    time.Time
	batches  sync.Pool // for the reorder timers' deliveries: loops have their own (turn)
	helds    sync.Pool // reorder buffers' copies

	mu         sync.Mutex // serialises control operations
	closed     bool
	dropKept   bool // Close(remove): the keeper lets go of everything too
	rxPaused   bool // PauseReceive
	tunnels    map[uint32]*tunnel
	ipSessions atomicMap[uint32, *session]
	byIndex    atomicMap[int, *session]
	ipRx       [2]*ipListener // IPv4, IPv6
	sched      *scheduler
	mon        tap.LinkMonitor
	monDone    chan struct{}
}

type ipListener struct {
	r     conn.Reader
	close func() error
	refs  int
	src   *source // nil while receiving is paused
}

func (l *ipListener) serve(m *Manager) (err error) {
	l.src, err = m.sched.add(l.r.PollFD(), func(t *turn) result { return m.receiveFrom(t, l.r, encap.EncapIP, nil) })
	return err
}

// New starts a Manager.
func New(o Options) (*Manager, error) {
	m := &Manager{opt: o, host: o.Host.withDefaults(), log: o.Logger, epoch: time.Now(), tunnels: make(map[uint32]*tunnel)}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.batches.New = func() any { return newBatch() }
	m.helds.New = func() any { return &held{buf: make([]byte, 2048)} }
	var err error
	if m.sched, err = newScheduler(schedConfig{loops: o.Threads, rtPrio: o.RTPriority, moderation: o.Moderation, psi: cpuPressure, rtLimit: rtRuntime}, m.log); err != nil {
		return nil, err
	}
	err = m.inNS(func() (err error) {
		m.mon, err = m.host.Links.Monitor()
		return err
	})
	if err != nil {
		m.sched.close()
		return nil, err
	}
	m.monDone = make(chan struct{})
	go func() {
		defer close(m.monDone)
		if err := m.mon.Run(m.onLink, m.resyncLinks); err != nil && !isClosed(err) {
			m.log.Error("link monitor stopped: interface MTU, deletion and renames are no longer followed", "err", err)
		}
	}()
	return m, nil
}

func (m *Manager) inNS(f func() error) error { return netns.Do(m.opt.NetNS, f) }

func (m *Manager) now() int64 { return int64(time.Since(m.epoch)) }

func (m *Manager) getBatch() *batch  { return m.batches.Get().(*batch) }
func (m *Manager) putBatch(b *batch) { m.batches.Put(b) }
func (m *Manager) getHeld() *held    { return m.helds.Get().(*held) }
func (m *Manager) putHeld(h *held)   { h.frame = nil; m.helds.Put(h) }

func (m *Manager) record(c Change) error {
	if m.opt.Recorder == nil {
		return nil
	}
	return m.opt.Recorder.Record(c)
}

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

// readLink re-reads a session's interface (inside the namespace): its MTU
// is applied at once, its name returned in the event; ENODEV when it is
// gone.
func (m *Manager) readLink(s *session) (tap.LinkEvent, error) {
	info, err := m.host.Links.Info(s.ifindex)
	if err != nil {
		return tap.LinkEvent{}, err
	}
	st, err := m.host.Links.State(info.Name)
	if err != nil {
		return tap.LinkEvent{}, err
	}
	s.setMTU(st.MTU)
	return tap.LinkEvent{Index: s.ifindex, Name: info.Name, MTU: st.MTU, Up: st.Up}, nil
}

// AddTunnel creates a tunnel: for UDP a socket bound to local:udp_sport and
// connected to remote:udp_dport; for IP a raw socket bound and connected
// likewise, plus the namespace's protocol-115 listener.
func (m *Manager) AddTunnel(c TunnelConfig) error { return m.addTunnel(c, true) }

// RestoreTunnel re-creates a tunnel recorded by an earlier process: as
// AddTunnel, without recording it again.
func (m *Manager) RestoreTunnel(c TunnelConfig) error { return m.addTunnel(c, false) }

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
			if t.conn, err = m.host.DialIP(c.Local, c.Remote); err != nil {
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

func (m *Manager) holdIPListener(v6 bool) error {
	i := 0
	if v6 {
		i = 1
	}
	if l := m.ipRx[i]; l != nil {
		l.refs++
		return nil
	}
	var (
		r       conn.Reader
		closeFn func() error
		err     error
	)
	kept := m.take(keptListener(v6))
	if kept != nil {
		if r, closeFn, err = conn.AdoptListenIP(kept, v6); err != nil {
			m.log.Warn("cannot adopt the kept IP listener: opening another", "err", err)
			m.drop(keptListener(v6))
			kept = nil
		}
	}
	if kept == nil {
		if r, closeFn, err = m.host.ListenIP(v6); err != nil {
			return err
		}
		m.keep(keptListener(v6), connFile(r))
	}
	l := &ipListener{r: r, close: closeFn, refs: 1}
	if !m.rxPaused {
		if err := l.serve(m); err != nil {
			closeFn()
			return err
		}
	}
	m.ipRx[i] = l
	return nil
}

func (m *Manager) releaseIPListener(v6 bool) {
	i := 0
	if v6 {
		i = 1
	}
	l := m.ipRx[i]
	if l == nil {
		return
	}
	if l.refs--; l.refs == 0 {
		if l.src != nil {
			if err := l.src.remove(); err != nil {
				m.log.Error("IP listener", "err", err)
			}
		}
		l.close()
		m.ipRx[i] = nil
		if !m.closed || m.dropKept {
			m.drop(keptListener(v6))
		}
	}
}

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

// PauseReceive holds back the reading of tunnel sockets until
// ResumeReceive: a daemon restoring its state adopts sockets with frames
// waiting in them, which must wait until their sessions are restored too.
func (m *Manager) PauseReceive() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rxPaused = true
}

// ResumeReceive serves the sockets PauseReceive held back.
func (m *Manager) ResumeReceive() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.rxPaused || m.closed {
		return nil
	}
	m.rxPaused = false
	var errs []error
	for _, t := range m.tunnels {
		if t.cfg.Encap == encap.EncapUDP && t.src == nil {
			errs = append(errs, t.serve(m))
		}
	}
	for _, l := range m.ipRx {
		if l != nil && l.src == nil {
			errs = append(errs, l.serve(m))
		}
	}
	return errors.Join(errs...)
}

// stopReceiving stops serving every tunnel socket and IP listener (their
// batches under way finish first).
func (m *Manager) stopReceiving() {
	for _, t := range m.tunnels {
		if t.src != nil {
			if err := t.src.remove(); err != nil {
				m.log.Error("tunnel socket", "tunnel_id", t.cfg.TunnelID, "err", err)
			}
			t.src = nil
		}
	}
	for _, l := range m.ipRx {
		if l != nil && l.src != nil {
			if err := l.src.remove(); err != nil {
				m.log.Error("IP listener", "err", err)
			}
			l.src = nil
		}
	}
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

// AddSession creates a session and its TAP interface (named Name, or
// l2tpethN with the lowest free N), with the kernel's MTU for the path to
// the peer, down, with a random locally administered MAC (as l2tp_eth).
// It returns the interface name.
func (m *Manager) AddSession(c SessionConfig) (string, error) {
	return m.addSession(c, nil)
}

// Restore is what an earlier process recorded of a session.
type Restore struct {
	// Interface was the session's interface, Index its index. If it is
	// still there (a persistent TAP, see Options.PersistTAP: of
	// Options.Owner, no queue attached) the session re-attaches to it and
	// leaves its MTU, addresses and bridge membership alone; found by
	// Index when it was renamed meanwhile.
	Interface string
	Index     int
	// Recreate creates the interface anew when it is gone, as after a
	// reboot. Without it (the interface was deleted behind the earlier
	// process's back, as the kernel deletes the session with it) the
	// restore fails with ErrInterfaceGone.
	Recreate bool
	// NextNS is the sequence number to send next. The peer drops numbers
	// behind the one it expects (the kernel's window rule) but resyncs
	// to numbers ahead after a few packets, so a session restored after a
	// crash should resume ahead of the last number it is known to have
	// sent.
	NextNS uint32
}

// RestoreSession re-creates a session recorded by an earlier process.
func (m *Manager) RestoreSession(c SessionConfig, r Restore) (string, error) {
	return m.addSession(c, &r)
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
	adopted := false // the queues a keeper held
	err := m.inNS(func() error {
		name := c.Name
		attach, target := false, 0
		var qs []tap.Device
		if r != nil {
			qs = m.adoptQueues(r.Index)
		}
		if qs != nil {
			adopted, attach = true, true
		} else if r != nil {
			var err error
			if name, target, attach, err = m.restoreTarget(r); err != nil {
				return err
			}
		} else if name == "" {
			name = "l2tpeth%d"
		} else if _, err := m.host.Links.Index(name); err == nil {
			return fmt.Errorf("interface %s: %w", name, ErrNameExists)
		}
		// A new interface is made persistent only once recorded (below):
		// if the process dies before, the kernel removes it.
		var err error
		if !adopted {
			qs, err = m.host.OpenTAP(m.tapConfig(name, attach))
		}
		if attach && errors.Is(err, syscall.EBUSY) {
			// A single-queue device with its queue taken (rtnetlink
			// counts only a multi-queue device's queues).
			if m.byIndex.get(target) != nil {
				return ErrInterfaceGone
			}
			return ErrInterfaceBusy
		}
		if err != nil {
			return err
		}
		dev := qs[0]
		s.dev, s.queues = dev, qs
		if adopted && !t.noAddr {
			// The keeper turned it off when the last process died.
			if err := dev.SetCarrier(true); err != nil {
				m.log.Warn("cannot turn the carrier on", "interface", dev.Name(), "err", err)
			}
		}
		if t.noAddr {
			// Attaching turned the carrier on: off again before the
			// interface is configured (RefreshCarrier).
			if err := dev.SetCarrier(false); err != nil {
				m.log.Warn("cannot turn the carrier off", "interface", dev.Name(), "err", err)
			}
		}
		ifname := dev.Name()
		s.ifname.Store(&ifname)
		closeAll := func() {
			for _, q := range qs[1:] {
				q.Close()
			}
			if attach {
				dev.Close()
			} else {
				dev.Remove()
			}
		}
		if attach {
			if st, err := m.host.Links.State(ifname); err == nil {
				s.mtu = st.MTU // the administrator's, kept
			}
		} else if err := dev.SetMTU(s.mtu); err != nil {
			closeAll()
			return err
		}
		idx, err := dev.Index()
		if err != nil {
			closeAll()
			return err
		}
		s.ifindex = idx
		return nil
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

func (m *Manager) tapConfig(name string, attach bool) tap.Config {
	return tap.Config{Name: name, Persist: attach, Attach: attach, Backend: m.opt.TAPBackend,
		VnetHdr: !m.opt.NoTAPGRO, TSO: !m.opt.NoTSO, Queues: m.opt.TAPQueues, Owner: m.opt.Owner}
}

// adoptQueues takes the queues a keeper held of the interface with index
// ifindex, or nil: where there are none, or they do not fit this Manager's
// configuration (then the keeper lets go of them, and the restore attaches
// to the interface as after a crash without a keeper).
func (m *Manager) adoptQueues(ifindex int) []tap.Device {
	if ifindex <= 0 {
		return nil
	}
	var qs []tap.Device
	var err error
	taken := 0
	for q := 0; q < tap.MaxQueues; q++ {
		f := m.take(keptQueue(ifindex, q))
		if f == nil {
			break
		}
		taken++
		if err != nil {
			f.Close()
			continue
		}
		var d tap.Device
		if d, err = tap.Adopt(f, m.tapConfig("", true)); err == nil {
			qs = append(qs, d)
		}
	}
	if err == nil && len(qs) > 0 {
		if idx, ierr := qs[0].Index(); ierr != nil || idx != ifindex {
			err = fmt.Errorf("the kept queue is of interface %d, not %d", idx, ifindex)
		}
	}
	if err == nil {
		return qs
	}
	m.log.Warn("cannot adopt the kept queues: attaching again", "ifindex", ifindex, "err", err)
	for _, d := range qs {
		d.Close()
	}
	for q := range taken {
		m.drop(keptQueue(ifindex, q))
	}
	return nil
}

// restoreTarget finds the interface a restored session attaches to: the
// recorded one, under its name or (renamed) its index, if it is a TAP of
// the Manager's owner with no queue attached; or the name to create it
// under (Recreate).
func (m *Manager) restoreTarget(r *Restore) (name string, index int, attach bool, err error) {
	check := func(idx int) error {
		info, err := m.host.Links.Info(idx)
		switch {
		case err != nil || !info.Tap || (m.opt.Owner != nil && info.Owner != m.opt.Owner.UID && info.Owner != -1):
			return ErrInterfaceGone // another device has the name now
		case info.Queues > 0 && m.byIndex.get(idx) != nil:
			return ErrInterfaceGone // one of this Manager's sessions has it now
		case info.Queues > 0:
			return ErrInterfaceBusy
		}
		return nil
	}
	if idx, err := m.host.Links.Index(r.Interface); err == nil {
		if err := check(idx); err != nil && !(r.Recreate && errors.Is(err, ErrInterfaceGone)) {
			return "", 0, false, err
		} else if err == nil {
			return r.Interface, idx, true, nil
		}
		return "", 0, false, ErrInterfaceBusy // a reboot's restore: the name is another's
	}
	if r.Index > 0 && !r.Recreate {
		if info, err := m.host.Links.Info(r.Index); err == nil && check(r.Index) == nil {
			return info.Name, r.Index, true, nil // renamed while no process held it
		}
	}
	if !r.Recreate {
		return "", 0, false, ErrInterfaceGone
	}
	return r.Interface, 0, false, nil
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

// Close stops the manager. Without persistence every interface is
// removed; with Options.PersistTAP they stay for the next process unless
// remove is set.
func (m *Manager) Close(remove bool) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var ss []*session
	for _, t := range m.tunnels {
		for _, s := range t.sessions.all() {
			m.unregister(s)
			ss = append(ss, s)
		}
	}
	m.dropKept = remove
	if !remove {
		// A stop for a restart (the keeper holds everything): stop
		// reading the sockets first, so that no frame is read and then
		// lost to a TAP already closed; the next process reads on.
		m.stopReceiving()
	}
	stopAll(ss, remove || !m.opt.PersistTAP)
	for _, t := range m.tunnels {
		m.removeTunnel(t, remove)
	}
	m.mu.Unlock()
	m.mon.Close()
	<-m.monDone
	return m.sched.close()
}

func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}
