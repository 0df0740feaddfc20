package daemon

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/internal/peer"
	"github.com/l2tpu/l2tpu/tap"
)

// admit takes a connection within the limits (maxConns in all,
// maxConnsPerUser for one uid; root has none) or closes it at once. A
// caller who may not use the daemon is answered at once, without a slot; a
// connection holds its slot at most requestTimeout before its request is
// read.
func (s *Server) admit(c *net.UnixConn) {
	cred, err := peer.Of(c)
	if err != nil {
		c.Close()
		return
	}
	if !s.allowed(cred) {
		s.limit.warn("refused", "uid", cred.UID, "pid", cred.PID())
		cred.Close()
		c.SetWriteDeadline(time.Now().Add(requestTimeout))
		s.reply(c, errResponse(syscall.EPERM, "only root or the daemon's group may use l2tpu"))
		c.Close()
		return
	}
	s.connMu.Lock()
	// Root is never kept out by other users' connections.
	if cred.UID != 0 && (s.conns >= maxConns || s.byUser[cred.UID] >= maxConnsPerUser) {
		s.connMu.Unlock()
		s.limit.warn("connection refused: too many", "uid", cred.UID, "pid", cred.PID())
		cred.Close()
		c.Close()
		return
	}
	s.conns++
	s.byUser[cred.UID]++
	s.connMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer func() {
			s.connMu.Lock()
			s.conns--
			if s.byUser[cred.UID]--; s.byUser[cred.UID] == 0 {
				delete(s.byUser, cred.UID)
			}
			s.connMu.Unlock()
			cred.Close()
			s.wg.Done()
		}()
		s.handle(c, cred)
	}()
}

// handle answers one request. Nothing a client sends can stop the daemon:
// malformed, oversized or slow requests get an error, and a panic is
// contained to this connection. The request must arrive within
// requestTimeout; the operation itself has no deadline (deleting a tunnel
// with thousands of sessions takes a while), the reply again requestTimeout.
func (s *Server) handle(c *net.UnixConn, cred *peer.Process) {
	defer c.Close()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("request handler panic", "panic", r)
		}
	}()
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	req, err := DecodeRequest(c)
	if err != nil {
		s.limit.warn("malformed request", "pid", cred.PID(), "uid", cred.UID, "err", err)
		s.reply(c, errResponse(syscall.EINVAL, "malformed request: "+err.Error()))
		return
	}
	s.reply(c, s.do(req, cred))
}

// DecodeRequest reads one request: at most MaxRequest bytes of JSON with
// known fields only, and an operation the daemon has.
func DecodeRequest(r io.Reader) (Request, error) {
	var req Request
	dec := json.NewDecoder(io.LimitReader(r, MaxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, err
	}
	switch req.Op {
	case OpAddTunnel:
		if req.Tunnel == nil {
			return req, errors.New("add_tunnel needs a tunnel")
		}
	case OpAddSession:
		if req.Session == nil {
			return req, errors.New("add_session needs a session")
		}
	case OpDelTunnel, OpDelSession, OpList, OpStop, OpRestart, OpYield:
	default:
		return req, fmt.Errorf("unknown operation %q", req.Op)
	}
	return req, nil
}

func (s *Server) reply(c *net.UnixConn, r Response) {
	b, _ := json.Marshal(r)
	c.SetWriteDeadline(time.Now().Add(requestTimeout))
	c.Write(append(b, '\n'))
}

func errResponse(e syscall.Errno, msg string) Response {
	return Response{Errno: int(e), Error: msg}
}

func failure(err error) Response {
	r := Response{Errno: int(dataplane.Errno(err)), Error: err.Error()}
	if errors.Is(err, dataplane.ErrNeedRaw) {
		r.Hint = dataplane.ErrNeedRaw.Error()
	}
	return r
}

func (s *Server) do(req Request, cred *peer.Process) Response {
	// Every operation needs what the kernel's genl L2TP operations need
	// (GENL_UNS_ADMIN_PERM: CAP_NET_ADMIN), show included: it reveals
	// cookies. admit checked the caller; check again, as the process
	// behind the connection may have dropped its capabilities since.
	if !s.allowed(cred) {
		s.limit.warn("refused", "op", req.Op, "uid", cred.UID, "pid", cred.PID())
		return errResponse(syscall.EPERM, "only root or the daemon's group may use l2tpu")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.Op {
	case OpList:
		return s.list()
	case OpStop:
		s.opt.Keep = false
		s.log.Info("stop requested", "uid", cred.UID, "pid", cred.PID())
		s.stopServe()
		return Response{}
	case OpYield:
		// A service manager's daemon taking this one's place: root's
		// alone (a group member could otherwise end the service's
		// daemon with status 0, which no restart policy restarts).
		if cred.UID != 0 {
			s.limit.warn("refused", "op", req.Op, "uid", cred.UID, "pid", cred.PID())
			return errResponse(syscall.EPERM, "only root may make the daemon yield")
		}
		s.opt.Keep = true
		s.log.Info("yielding to another daemon", "uid", cred.UID, "pid", cred.PID())
		s.stopServe()
		return Response{}
	case OpRestart:
		if s.opt.KeeperExe == "" {
			return errResponse(syscall.EOPNOTSUPP, "this daemon cannot restart itself (it was not started as l2tpu daemon)")
		}
		s.opt.Keep, s.restarting = true, true
		s.log.Info("restart requested", "uid", cred.UID, "pid", cred.PID())
		s.stopServe()
		return Response{}
	}
	var (
		err error
		out Response
	)
	switch req.Op {
	case OpAddTunnel:
		if _, ok := s.pendingT[req.Tunnel.TunnelID]; ok {
			err = fmt.Errorf("tunnel %d (not restored yet): %w", req.Tunnel.TunnelID, dataplane.ErrTunnelExists)
		} else {
			err = s.m.AddTunnel(*req.Tunnel)
		}
	case OpAddSession:
		c := req.Session
		if why, ok := s.pendingT[c.TunnelID]; ok {
			err = fmt.Errorf("tunnel %d is not restored yet (%s): %w", c.TunnelID, why, syscall.EAGAIN)
		} else if k, ok := s.pendingConflict(c.TunnelID, c.SessionID); ok {
			err = fmt.Errorf("session %d in tunnel %d (not restored yet): %w", k.session, k.tunnel, dataplane.ErrSessionExists)
		} else {
			out.Interface, err = s.m.AddSession(*c)
		}
	case OpDelTunnel:
		err = s.delTunnel(req.TunnelID)
	case OpDelSession:
		err = s.delSession(req.TunnelID, req.SessionID)
	}
	if err != nil {
		s.log.Info("request failed", "op", req.Op, "err", err)
		return failure(err)
	}
	return out
}

// pendingConflict finds a pending session that a new one may not sit
// beside (the kernel's rules, as dataplane's checkSessionID): the same IDs,
// or the same session ID where either tunnel is IP-encapsulated.
func (s *Server) pendingConflict(tid, sid uint32) (sessionKey, bool) {
	ip := func(id uint32) bool { t, ok := s.j.tunnel(id); return ok && t.encapIP() }
	for k := range s.pendingS {
		if k.session == sid && (k.tunnel == tid || ip(k.tunnel) || ip(tid)) {
			return k, true
		}
	}
	return sessionKey{}, false
}

// delTunnel deletes a tunnel, live or pending, with its sessions, pending
// ones and the interfaces they left included.
func (s *Server) delTunnel(id uint32) error {
	var lingering []string
	for k := range s.pendingS {
		if k.tunnel == id {
			if r, ok := s.j.session(k); ok {
				lingering = append(lingering, r.Interface)
			}
		}
	}
	if _, ok := s.pendingT[id]; ok {
		if err := s.j.append(record{Op: recDelTunnel, TunnelID: id}); err != nil {
			return fmt.Errorf("tunnel %d: %w", id, err)
		}
		delete(s.pendingT, id)
	} else if err := s.m.DeleteTunnel(id); err != nil {
		return err
	}
	for k := range s.pendingS {
		if k.tunnel == id {
			delete(s.pendingS, k)
		}
	}
	for _, name := range lingering {
		tap.RemovePersistent(name)
	}
	return nil
}

func (s *Server) delSession(tid, sid uint32) error {
	k := sessionKey{tid, sid}
	if _, ok := s.pendingS[k]; !ok {
		return s.m.DeleteSession(tid, sid)
	}
	r, _ := s.j.session(k)
	if err := s.j.append(record{Op: recDelSession, TunnelID: tid, SessionID: sid}); err != nil {
		return fmt.Errorf("session %d in tunnel %d: %w", sid, tid, err)
	}
	delete(s.pendingS, k)
	tap.RemovePersistent(r.Interface)
	return nil
}

// list is show: the live tunnels and sessions, and those recorded but not
// restored yet, as configured (no counters).
func (s *Server) list() Response {
	r := Response{Tunnels: s.m.Tunnels(), Sessions: s.m.Sessions()}
	if len(s.pendingT)+len(s.pendingS) == 0 {
		return r
	}
	for id := range s.pendingT {
		if t, ok := s.j.tunnel(id); ok {
			if c, err := t.config(); err == nil {
				r.Tunnels = append(r.Tunnels, dataplane.TunnelInfo{Config: c})
			}
		}
	}
	for k := range s.pendingS {
		x, ok := s.j.session(k)
		if !ok {
			continue
		}
		c, err := x.config()
		if err != nil {
			continue
		}
		var peer uint32
		if t, ok := s.j.tunnel(k.tunnel); ok {
			peer = t.PeerTunnelID
		}
		r.Sessions = append(r.Sessions, dataplane.SessionInfo{Config: c, PeerTunnelID: peer, Interface: x.Interface,
			SendSeq: c.SendSeq, RecvSeq: c.RecvSeq, NextNS: x.NextNS})
	}
	slices.SortFunc(r.Tunnels, func(a, b dataplane.TunnelInfo) int { return cmp.Compare(a.Config.TunnelID, b.Config.TunnelID) })
	slices.SortFunc(r.Sessions, func(a, b dataplane.SessionInfo) int {
		return compareKeys(sessionKey{a.Config.TunnelID, a.Config.SessionID}, sessionKey{b.Config.TunnelID, b.Config.SessionID})
	})
	return r
}

// allowed is the kernel's check for a genetlink L2TP operation: a caller
// that holds CAP_NET_ADMIN over the namespace (see peer.Process.NetAdmin,
// judged through the pidfd the kernel took at connect, so that a PID
// reused by another process cannot answer for it), as the user it
// connected as (SO_PEERCRED: the kernel judges the credentials a netlink
// socket was opened with, not what its process became since: one that
// connects as nobody and then executes a set-user-ID program is refused);
// or membership of the configured group when it connected (SO_PEERCRED,
// SO_PEERGROUPS).
func (s *Server) allowed(c *peer.Process) bool {
	if same, err := c.SameUser(); same && err == nil {
		if ok, _, err := c.NetAdmin(); ok && err == nil {
			return true
		}
	}
	if s.gid < 0 {
		return false
	}
	return int(c.GID) == s.gid || slices.Contains(c.Groups, uint32(s.gid))
}

// sortedKeys orders session keys by tunnel, then session.
func sortedKeys(m map[sessionKey]string) []sessionKey {
	ks := slices.Collect(maps.Keys(m))
	slices.SortFunc(ks, compareKeys)
	return ks
}

func compareKeys(a, b sessionKey) int {
	return cmp.Or(cmp.Compare(a.tunnel, b.tunnel), cmp.Compare(a.session, b.session))
}
