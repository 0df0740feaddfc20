package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

// statePathFor is the journal's path: the one given (Options.StatePath),
// else the namespace's file under the runtime directory where the
// namespace has a stable identity, else "" (no state is kept).
func statePathFor(given string, stable bool, p Paths) string {
	if given == "" && stable {
		return p.State
	}
	return given
}

// openState reads the state recorded at path ("": none is kept) and opens
// the journal there (s.j) with it as a fresh snapshot. A state file of an
// earlier boot that cannot be this namespace's is set aside, not
// restored. It returns what to restore.
func (s *Server) openState(path string) (*table, error) {
	if path == "" {
		s.log.Warn("state is not kept across restarts", "why", ErrNoCookie)
		return newTable(), nil
	}
	t, note, err := loadJournal(path, s.cookie)
	if errors.Is(err, ErrEarlierBoot) {
		// Not this namespace's: set aside (for an administrator to
		// look at), never restored here.
		aside := path + ".earlier-boot"
		if rerr := os.Rename(path, aside); rerr == nil {
			s.log.Warn("state file set aside, not restored", "file", aside, "why", err)
			t, note, err = newTable(), "", nil
		}
	}
	if err != nil {
		return nil, err
	}
	if note != "" {
		s.log.Warn("state file", "file", path, "note", note)
	}
	if s.j, err = openJournal(path, s.cookie, t); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return t, nil
}

// restoreState restores t into the dataplane (restoreAll), then serves
// the tunnels' sockets, sets the sessions' carriers and lets the keeper
// drop what nothing restored claims.
func (s *Server) restoreState(t *table) {
	// What waits in adopted sockets is for sessions restored after their
	// tunnels: read on once all are.
	s.m.PauseReceive()
	s.mu.Lock()
	s.restoreAll(t)
	s.mu.Unlock()
	if err := s.m.ResumeReceive(); err != nil {
		s.log.Error("tunnel sockets not served", "err", err)
	}
	// A tunnel whose kept socket was adopted is restored even while its
	// address is gone (as the kernel's socket stays): its carrier says so.
	if err := s.m.RefreshCarrier(); err != nil {
		s.log.Warn("carrier not updated", "err", err)
	}
	if s.keeper != nil {
		if err := s.keeper.dropUnclaimed(keptFor(t)); err != nil {
			s.log.Error("keeper", "err", err)
		}
	}
}

// restoreAll re-creates what the table records; interfaces left by a
// crashed daemon are re-attached, not re-created. What fails is kept as
// pending, with its reason, and retried.
func (s *Server) restoreAll(t *table) {
	for _, r := range t.records() {
		switch {
		case r.Tunnel != nil:
			s.restoreTunnel(r.Tunnel)
		case r.Session != nil:
			s.restoreSession(r.Session)
		}
	}
	s.allRestored()
	if n := t.size(); n > 0 {
		s.log.Info("state restored", "tunnels", len(t.tunnels), "sessions", len(t.sessions),
			"pending_tunnels", len(s.pendingT), "pending_sessions", len(s.pendingS))
	}
}

func (s *Server) restoreTunnel(r *tunnelRecord) bool {
	c, err := r.config()
	if err == nil {
		err = s.m.RestoreTunnel(c)
	}
	if err != nil {
		if s.pendingT[r.TunnelID] != err.Error() {
			s.log.Warn("tunnel not restored yet: kept, and retried", "tunnel_id", r.TunnelID, "err", err)
		}
		s.pendingT[r.TunnelID] = err.Error()
		return false
	}
	if _, was := s.pendingT[r.TunnelID]; was {
		s.log.Info("pending tunnel restored", "tunnel_id", r.TunnelID)
	}
	delete(s.pendingT, r.TunnelID)
	return true
}

func (s *Server) restoreSession(r *sessionRecord) bool {
	k := sessionKey{r.TunnelID, r.SessionID}
	var err error
	if why, ok := s.pendingT[r.TunnelID]; ok {
		err = fmt.Errorf("tunnel %d not restored: %s", r.TunnelID, why)
	} else {
		var c dataplane.SessionConfig
		if c, err = r.config(); err == nil {
			x := r.restore(s.j.sameBoot())
			if _, err = s.m.RestoreSession(c, x); err == nil && c.SendSeq {
				// Checkpoint it only once it has sent: a restored
				// session that crashes again before sending resumes
				// from the same checkpoint, not a margin further.
				s.lastNS[k] = x.NextNS
			}
		}
	}
	if errors.Is(err, dataplane.ErrInterfaceGone) {
		// Deleted behind the daemon's back while it was away (or
		// pending): the session goes, as the kernel's would.
		s.log.Warn("session deleted: its interface is gone", "tunnel_id", r.TunnelID, "session_id", r.SessionID, "interface", r.Interface)
		if jerr := s.j.append(record{Op: recDelSession, TunnelID: r.TunnelID, SessionID: r.SessionID}); jerr != nil {
			s.pendingS[k] = jerr.Error()
			return false
		}
		delete(s.pendingS, k)
		return true
	}
	if err != nil {
		if s.pendingS[k] != err.Error() {
			s.log.Warn("session not restored yet: kept, and retried", "tunnel_id", r.TunnelID, "session_id", r.SessionID, "err", err)
		}
		s.pendingS[k] = err.Error()
		if s.keeper != nil {
			// Its queue is still attached (the keeper's): say the
			// link is down, as with no process behind it.
			s.keeper.carrierOff(r.Index)
		}
		return false
	}
	if _, was := s.pendingS[k]; was {
		s.log.Info("pending session restored", "tunnel_id", r.TunnelID, "session_id", r.SessionID)
	}
	delete(s.pendingS, k)
	return true
}

// retryPending tries again what could not be restored.
func (s *Server) retryPending() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pendingT)+len(s.pendingS) == 0 || s.j == nil {
		return
	}
	for _, id := range slices.Sorted(maps.Keys(s.pendingT)) {
		if r, ok := s.j.tunnel(id); ok {
			s.restoreTunnel(&r)
		}
	}
	for _, k := range sortedKeys(s.pendingS) {
		if r, ok := s.j.session(k); ok {
			s.restoreSession(&r)
		}
	}
	s.allRestored()
}

// allRestored marks the journal's interfaces as this boot's once nothing is
// pending.
func (s *Server) allRestored() {
	if s.j != nil && len(s.pendingS) == 0 {
		if err := s.j.thisBoot(); err != nil {
			s.log.Error("state file", "err", err)
		}
	}
}

// retries retries pending restores on address and link changes (when a
// missing address or interface may have come back) and periodically.
func (s *Server) retries(ctx context.Context) {
	w, err := newWatcher()
	if err != nil {
		s.log.Warn("no address events: pending restores are retried periodically only", "err", err)
	} else {
		defer w.close()
		go w.run(s.retry)
	}
	t := time.NewTicker(s.opt.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.retry:
			time.Sleep(100 * time.Millisecond) // let a burst of events settle
		}
		s.retryPending()
		if err := s.m.RefreshCarrier(); err != nil {
			s.log.Warn("carrier not updated", "err", err)
		}
	}
}

// keptFor says which kept descriptors the state t names: those of its
// tunnels, of the IP listeners its IP tunnels need, and of the interfaces
// of its sessions.
func keptFor(t *table) func(name string) bool {
	ifindexes := map[int]bool{}
	for _, r := range t.sessions {
		ifindexes[r.Index] = true
	}
	return func(name string) bool {
		if name == keptControl {
			return true
		}
		kind, id, ok := dataplane.ParseKept(name)
		switch {
		case !ok:
			return false
		case kind == dataplane.KeptTunnel:
			return t.tunnels[uint32(id)] != nil
		case kind == dataplane.KeptQueue:
			return ifindexes[id]
		}
		for _, r := range t.tunnels {
			if c, err := r.config(); err == nil && c.Encap == encap.EncapIP && c.IPv6() == (id == 6) {
				return true
			}
		}
		return false
	}
}
