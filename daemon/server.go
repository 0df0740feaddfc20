package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/tap"
)

// Options configure the daemon.
type Options struct {
	// StatePath is the state file; "" means DefaultStatePath().
	StatePath string
	// Keep leaves interfaces and state in place on SIGTERM, for a restart
	// that picks them up again; by default a clean stop removes them.
	Keep bool
	// Group, if set, may change state as well as root.
	Group string
	// Logger receives the daemon's logs.
	Logger     *slog.Logger
	TAPBackend tap.Backend
	NoGSO      bool // see dataplane.Options
	NoGRO      bool
	NoTAPGRO   bool
	NoTSO      bool
	TAPQueues  int // see dataplane.Options
}

// ErrRunning: another daemon already serves this network namespace.
var ErrRunning = errors.New("an l2tpu daemon already runs in this network namespace")

// Server is a running daemon.
type Server struct {
	opt    Options
	log    *slog.Logger
	m      *dataplane.Manager
	ln     *net.UnixListener
	gid    int        // -1 when no group is configured
	mu     sync.Mutex // serialises changes and the state file
	lastNS string     // sequence numbers at the last save
	conns  sync.WaitGroup
}

// Listen claims this namespace's control socket (the bind is the lock that
// keeps a second daemon out), starts the dataplane and restores the state
// an earlier daemon recorded.
func Listen(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StatePath == "" {
		p, err := DefaultStatePath()
		if err != nil {
			return nil, err
		}
		o.StatePath = p
	}
	s := &Server{opt: o, log: o.Logger, gid: -1}
	if o.Group != "" {
		g, err := user.LookupGroup(o.Group)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", o.Group, err)
		}
		s.gid, _ = strconv.Atoi(g.Gid)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: SocketName, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, ErrRunning
		}
		return nil, err
	}
	s.ln = ln
	s.m, err = dataplane.New(dataplane.Options{Logger: o.Logger, PersistTAP: true, TAPBackend: o.TAPBackend, NoGSO: o.NoGSO, NoGRO: o.NoGRO, NoTAPGRO: o.NoTAPGRO, NoTSO: o.NoTSO, TAPQueues: o.TAPQueues})
	if err != nil {
		ln.Close()
		return nil, err
	}
	if err := s.restore(); err != nil {
		s.m.Close(false)
		ln.Close()
		return nil, err
	}
	return s, nil
}

// restore re-creates what the state file records; interfaces left by a
// crashed daemon are re-attached, not re-created.
func (s *Server) restore() error {
	st, err := load(s.opt.StatePath)
	if err != nil {
		return err
	}
	for _, t := range st.Tunnels {
		if err := s.m.AddTunnel(t); err != nil {
			s.log.Error("restore tunnel", "tunnel_id", t.TunnelID, "err", err)
		}
	}
	for _, x := range st.Sessions {
		if _, err := s.m.RestoreSession(x.Config, x.restore()); err != nil {
			s.log.Error("restore session", "tunnel_id", x.Config.TunnelID, "session_id", x.Config.SessionID, "err", err)
		}
	}
	if len(st.Tunnels)+len(st.Sessions) > 0 {
		s.log.Info("state restored", "file", s.opt.StatePath, "tunnels", len(st.Tunnels), "sessions", len(st.Sessions))
	}
	return s.save()
}

func (s *Server) save() error { return s.saveState(false) }

func (s *Server) saveState(exact bool) error {
	st := snapshot(s.m, exact)
	s.lastNS = nsOf(st)
	if err := save(s.opt.StatePath, st); err != nil {
		s.log.Error("state file", "file", s.opt.StatePath, "err", err)
		return err
	}
	return nil
}

// Serve answers requests until ctx is done, then stops: without Keep every
// interface and the state file are removed, as the kernel's state goes with
// its namespace.
func (s *Server) Serve(ctx context.Context) error {
	pidPath, err := PIDPath()
	if err == nil {
		if err := os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			s.log.Warn("pid file", "err", err)
		}
		defer os.Remove(pidPath)
	}
	notify("READY=1")
	go func() {
		<-ctx.Done()
		s.ln.Close()
	}()
	go s.checkpoints(ctx)
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.log.Warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.conns.Add(1)
		go s.handle(c)
	}
	notify("STOPPING=1")
	s.conns.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opt.Keep {
		s.saveState(true)
	}
	s.m.Close(!s.opt.Keep)
	if !s.opt.Keep {
		os.Remove(s.opt.StatePath)
	}
	s.log.Info("stopped", "kept", s.opt.Keep)
	return nil
}

// checkpoints saves the state once a second while sequence numbers move, so
// a daemon restarted after a crash knows where its numbering had got to.
func (s *Server) checkpoints(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		if nsOf(snapshot(s.m, false)) != s.lastNS {
			s.save()
		}
		s.mu.Unlock()
	}
}

func nsOf(st state) string {
	var b strings.Builder
	for _, x := range st.Sessions {
		fmt.Fprintf(&b, "%d/%d:%d ", x.Config.TunnelID, x.Config.SessionID, x.NextNS)
	}
	return b.String()
}

// Close stops the server without Serve (tests).
func (s *Server) Close() { s.ln.Close(); s.m.Close(!s.opt.Keep) }

// handle answers one request. Nothing a client sends can stop the daemon:
// malformed, oversized or slow requests get an error, and a panic is
// contained to this connection.
func (s *Server) handle(c *net.UnixConn) {
	defer s.conns.Done()
	defer c.Close()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("request handler panic", "panic", r)
		}
	}()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	cred, err := peerCred(c)
	if err != nil {
		s.reply(c, errResponse(syscall.EPERM, "cannot identify the caller"))
		return
	}
	var req Request
	dec := json.NewDecoder(io.LimitReader(c, MaxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.log.Warn("malformed request", "pid", cred.Pid, "uid", cred.Uid, "err", err)
		s.reply(c, errResponse(syscall.EINVAL, "malformed request: "+err.Error()))
		return
	}
	s.reply(c, s.do(req, cred))
}

func (s *Server) reply(c *net.UnixConn, r Response) {
	b, _ := json.Marshal(r)
	c.Write(append(b, '\n'))
}

func errResponse(e syscall.Errno, msg string) Response {
	return Response{Errno: int(e), Error: msg}
}

func failure(err error) Response {
	return Response{Errno: int(dataplane.Errno(err)), Error: err.Error()}
}

func (s *Server) do(req Request, cred *unix.Ucred) Response {
	if req.Op == OpList {
		return Response{Tunnels: s.m.Tunnels(), Sessions: s.m.Sessions()}
	}
	switch req.Op {
	case OpAddTunnel, OpAddSession, OpDelTunnel, OpDelSession:
	default:
		return errResponse(syscall.EOPNOTSUPP, fmt.Sprintf("unknown operation %q", req.Op))
	}
	if !s.allowed(cred) {
		s.log.Warn("refused", "op", req.Op, "uid", cred.Uid, "pid", cred.Pid)
		return errResponse(syscall.EPERM, "only root or the daemon's group may change l2tpu state")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		err error
		out Response
	)
	switch req.Op {
	case OpAddTunnel:
		if req.Tunnel == nil {
			return errResponse(syscall.EINVAL, "add_tunnel needs a tunnel")
		}
		err = s.m.AddTunnel(*req.Tunnel)
	case OpAddSession:
		if req.Session == nil {
			return errResponse(syscall.EINVAL, "add_session needs a session")
		}
		out.Interface, err = s.m.AddSession(*req.Session)
	case OpDelTunnel:
		err = s.m.DeleteTunnel(req.TunnelID)
	case OpDelSession:
		err = s.m.DeleteSession(req.TunnelID, req.SessionID)
	}
	if err != nil {
		s.log.Info("request failed", "op", req.Op, "err", err)
		return failure(err)
	}
	s.save()
	return out
}

// allowed: root, or a member of the configured group.
func (s *Server) allowed(c *unix.Ucred) bool {
	if c.Uid == 0 {
		return true
	}
	if s.gid < 0 {
		return false
	}
	if int(c.Gid) == s.gid {
		return true
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if g, ok := strings.CutPrefix(sc.Text(), "Groups:"); ok {
			for _, f := range strings.Fields(g) {
				if n, _ := strconv.Atoi(f); n == s.gid {
					return true
				}
			}
		}
	}
	return false
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// notify tells systemd (Type=notify) about the daemon's state.
func notify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}
