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
//
// Control: the Manager (this file) creates (create.go), deletes
// (delete.go), restores (restore.go) and reports (show.go) tunnels and
// sessions, follows their interfaces (links.go), and opens every device
// and socket through its Host (host.go), which tests replace with the
// in-memory tap/taptest and conn/conntest.
package dataplane

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

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
	// IPProto115 sends IP-encapsulated messages through protocol-115
	// sockets that build the header, the earlier path: each then also
	// gets a copy of every message from its remote (see conn.IPOptions).
	IPProto115 bool
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
