package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
)

var _ dataplane.Recorder = (*Server)(nil)

// Record is the dataplane.Recorder: each change goes to the journal before
// it is acknowledged.
func (s *Server) Record(c dataplane.Change) error {
	if s.j == nil {
		return nil
	}
	var r record
	switch c.Op {
	case dataplane.TunnelAdded:
		r = record{Op: recTunnel, Tunnel: tunnelRecordOf(c.Tunnel)}
	case dataplane.TunnelDeleted:
		r = record{Op: recDelTunnel, TunnelID: c.TunnelID}
	case dataplane.SessionAdded:
		r = record{Op: recSession, Session: sessionRecordOf(c.Session, c.Interface, c.Index)}
	case dataplane.SessionDeleted:
		r = record{Op: recDelSession, TunnelID: c.TunnelID, SessionID: c.SessionID}
	case dataplane.SessionRenamed:
		r = record{Op: recRename, TunnelID: c.TunnelID, SessionID: c.SessionID, Interface: c.Interface}
	default:
		return fmt.Errorf("unknown change %d", c.Op)
	}
	if err := s.j.append(r); err != nil {
		s.log.Error("state file", "file", s.j.path, "err", err)
		return err
	}
	return nil
}

// checkpoints records, once a second, the sequence numbers that moved, so
// a daemon restarted after a crash knows where its numbering had got to.
// Sessions whose numbers did not move cost nothing on disk.
func (s *Server) checkpoints(ctx context.Context) {
	every(ctx, time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.checkpoint(false)
		return true
	})
}

func (s *Server) checkpoint(exact bool) error {
	if s.j == nil {
		return nil
	}
	var moved []nextNSRecord
	s.m.EachNextNS(func(tid, sid, ns uint32) {
		k := sessionKey{tid, sid}
		if last, ok := s.lastNS[k]; exact || !ok || last != ns {
			moved = append(moved, nextNSRecord{TunnelID: tid, SessionID: sid, NextNS: ns})
		}
	})
	if len(moved) == 0 {
		return nil
	}
	if err := s.j.append(record{Op: recNextNS, NextNS: moved, Exact: exact}); err != nil {
		s.limit.error("sequence checkpoint", "err", err)
		return err
	}
	for _, x := range moved {
		s.lastNS[sessionKey{x.TunnelID, x.SessionID}] = x.NextNS
	}
	return nil
}
