package dataplane

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/tap"
)

// session is one pseudowire: a TAP device and its L2TP state.
type session struct {
	m       *Manager
	cfg     SessionConfig
	t       *tunnel
	ifname  atomic.Pointer[string] // follows renames
	ifindex int
	mtu     int          // at creation
	dev     tap.Device   // queue 0: frames received from the tunnel are written here
	queues  []tap.Device // every queue, each a source of a loop (send.go)
	srcs    []*source    // by queue
	tx      encap.TxHeader
	rx      encap.RxHeader
	hasL2S  bool

	// maxFrame is MTU+18: longer frames are dropped, as by l2tp_eth
	// (dev_forward_skb). The other half of that check, the interface
	// being up, the TUN driver makes itself: it refuses writes (EIO) to a
	// down interface, synchronously, as the kernel does.
	maxFrame atomic.Int64

	rxMu  sync.Mutex // serialises sequenced receive and the reorder timer
	seq   *encap.Seq[*held]
	timer *time.Timer

	// txMu keeps numbering and sending in one order when several queues
	// transmit a sequenced session: a peer drops what arrives out of
	// sequence.
	txMu sync.Mutex

	// rdMu is held while queue 0 is read: by its source, or right after
	// a write by the receive path (turnaround).
	rdMu sync.Mutex

	// seen is the last round of the loop serving the session's socket
	// that brought its frames (that loop's alone: loop.go).
	seen uint64

	stats counters
}

func (s *session) name() string { return *s.ifname.Load() }

func (s *session) setMTU(mtu int) { s.maxFrame.Store(int64(encap.MaxRxFrame(mtu))) }

// start makes each queue a source of the Manager's loops.
func (s *session) start() error {
	for _, q := range s.queues {
		src, err := s.m.sched.add(q.PollFD(), func(t *turn) result { return s.send(q, t.tx) })
		if err != nil {
			s.stopSources()
			return err
		}
		s.srcs = append(s.srcs, src)
	}
	return nil
}

func (s *session) stopSources() error {
	var errs []error
	for _, src := range s.srcs {
		errs = append(errs, src.remove())
	}
	s.srcs = nil
	return errors.Join(errs...)
}

// stop ends the session: sources removed, TAP closed (or removed), held
// packets purged (each rx_errors, as the kernel's purge).
func (s *session) stop(remove bool) {
	if err := s.stopSources(); err != nil {
		s.m.log.Error("session stop", "interface", s.name(), "err", err)
	}
	if remove {
		s.dev.Remove()
	} else {
		s.dev.Close()
	}
	for _, q := range s.queues[1:] {
		q.Close()
	}
	if remove {
		for i := range s.queues {
			s.m.drop(keptQueue(s.ifindex, i)) // the interface goes with the keeper's copy
		}
	}
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	for {
		h, ok := s.seq.Purge()
		if !ok {
			break
		}
		s.stats.rxErrors.Add(1)
		s.m.putHeld(h)
	}
}
