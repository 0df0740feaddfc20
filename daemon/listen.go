package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/internal/peer"
	"github.com/l2tpu/l2tpu/tap"
)

// Listen claims this namespace's control socket (the bind is the lock that
// keeps a second daemon out), starts the dataplane and restores the state
// an earlier daemon recorded. What cannot be restored yet is kept and
// retried (see Serve).
func Listen(o Options) (*Server, error) {
	o = o.withDefaults()
	s := newServer(o)
	if o.Group != "" {
		gid, err := lookupGID(o.Group)
		if err != nil {
			return nil, err
		}
		s.gid = gid
	}
	id, stable, err := NamespaceID()
	if err != nil {
		return nil, err
	}
	dir, err := RuntimeDir()
	if err != nil {
		return nil, err
	}
	s.paths = pathsFor(dir, id)
	if stable {
		s.cookie, _ = NamespaceCookie()
	}
	if s.ln, err = s.claimControl(); err != nil {
		if s.keeper != nil {
			s.keeper.close()
		}
		return nil, err
	}
	// A taken metrics address does not stop the daemon: any local user
	// can bind a port, and must not keep tunnels from being restored.
	// Serve keeps trying it.
	if o.MetricsAddr != "" {
		s.bindMetrics()
	}
	t, err := s.openState(statePathFor(o.StatePath, stable, s.paths))
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	s.logOptions()
	s.startKeeper()
	s.m, err = dataplane.New(s.dataplaneOptions())
	if err != nil {
		s.closeListeners()
		if s.j != nil {
			s.j.close()
		}
		if s.keeper != nil {
			s.keeper.close()
		}
		return nil, err
	}
	if o.MetricsAddr != "" {
		if err := s.setupMetrics(); err != nil {
			s.closeListeners()
			s.m.Close(false)
			if s.j != nil {
				s.j.close()
			}
			return nil, err
		}
	}
	s.restoreState(t)
	return s, nil
}

// newServer is a Server of o (with its defaults) before it holds anything.
func newServer(o Options) *Server {
	return &Server{opt: o, log: o.Logger, gid: -1, limit: newLogLimiter(o.Logger),
		pendingT: map[uint32]string{}, pendingS: map[sessionKey]string{}, lastNS: map[sessionKey]uint32{},
		retry: make(chan struct{}, 1), byUser: map[uint32]int{}, stopServe: func() {}}
}

// lookupGID is the ID of the group named name (Options.Group).
func lookupGID(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", name, err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	return gid, nil
}

// claimControl listens on the control socket: the one a restarting daemon
// handed over, else bound anew; where its name is taken, it takes the
// place of the daemon that serves the namespace (Options.TakeOver) or
// adopts the socket of one that died from the keeper, or says who holds
// it. It may leave s.keeper connected, even on failure.
func (s *Server) claimControl() (*net.UnixListener, error) {
	ln, err := inheritedListener()
	if ln == nil && err == nil {
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: SocketName, Net: "unix"})
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		err = holderError()
		if errors.Is(err, ErrRunning) && s.opt.TakeOver {
			s.log.Info("another daemon serves the namespace: taking its place", "other", err)
			ln, err = s.takeOver()
		} else if errors.Is(err, errHolderGone) {
			ln, err = s.adoptControl()
		}
	}
	return ln, err
}

// startKeeper connects the namespace's descriptor keeper where state is
// kept and Options.KeeperExe says how to run it (unless claimControl
// connected it already), and gives it the control socket, so that a crash
// leaves the socket's name to no one: the next daemon adopts it. Without a
// keeper the daemon runs on, its sockets opened again by a restart.
func (s *Server) startKeeper() {
	if s.keeper == nil && s.j != nil && s.opt.KeeperExe != "" {
		k, err := connectKeeper(s.opt.KeeperExe, os.Stderr, s.opt.OrphanCheck, s.paths.Keeper)
		if err != nil {
			s.log.Warn("sockets are not kept across a crash: a restart opens them again", "err", err)
		} else {
			s.keeper = k
			s.log.Info("descriptor keeper", "holds", len(k.kept), "pid", k.pid)
		}
	}
	if s.keeper == nil {
		return
	}
	if f := s.keeper.Take(keptControl); f != nil {
		f.Close() // the keeper's copy: this daemon has its own
	}
	// The control socket too, so that a crash leaves its name to
	// no one: the next daemon adopts it.
	if f, err := s.ln.File(); err != nil {
		s.log.Warn("the control socket is not kept across a crash", "err", err)
	} else if err := s.keeper.Keep(keptControl, f); err != nil {
		s.log.Warn("the control socket is not kept across a crash", "err", err)
	}
}

// dataplaneOptions are the dataplane's options for this daemon: its TAPs
// persist where state is kept, belong to it (and its group), and go to
// the keeper if there is one; every change is recorded (Record).
func (s *Server) dataplaneOptions() dataplane.Options {
	owner := &tap.Owner{UID: os.Geteuid(), GID: s.gid}
	dopt := dataplane.Options{Logger: s.opt.Logger, PersistTAP: s.j != nil, Tuning: s.opt.Tuning, Owner: owner, Recorder: s}
	if s.keeper != nil {
		dopt.Keeper = s.keeper
	}
	return dopt
}

func (s *Server) closeListeners() {
	s.ln.Close()
	if ln := s.mln.Load(); ln != nil {
		(*ln).Close()
	}
}

// adoptControl takes the control socket the namespace's keeper holds for
// a daemon that died, and listens on it again, which makes this process
// the one its callers see (SO_PEERCRED, SO_PEERPIDFD). The keeper stays
// connected (s.keeper).
func (s *Server) adoptControl() (*net.UnixListener, error) {
	if s.opt.KeeperExe == "" {
		return nil, fmt.Errorf("%w: held by a socket whose process exited", ErrSquatted)
	}
	if s.keeper == nil {
		k, err := connectKeeper(s.opt.KeeperExe, os.Stderr, s.opt.OrphanCheck, s.paths.Keeper)
		if err != nil {
			return nil, fmt.Errorf("%w: held by a socket whose process exited, and no keeper holds it: %v", ErrSquatted, err)
		}
		s.keeper = k
	}
	f := s.keeper.Take(keptControl)
	if f == nil {
		return nil, fmt.Errorf("%w: held by a socket whose process exited, not the keeper's", ErrSquatted)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		if u, ok := sa.(*unix.SockaddrUnix); err != nil || !ok || u.Name != SocketName {
			lerr = fmt.Errorf("the keeper's control socket is not %s (%v)", SocketName, err)
			return
		}
		lerr = unix.Listen(int(fd), unix.SOMAXCONN)
	}); err != nil {
		return nil, err
	}
	if lerr != nil {
		return nil, lerr
	}
	ul, err := unixListener(f)
	if err != nil {
		return nil, fmt.Errorf("the keeper's control socket: %w", err)
	}
	s.log.Info("control socket adopted from the keeper")
	return ul, nil
}

// unixListener is a listening unix socket's descriptor (a duplicate of f)
// as a listener.
func unixListener(f *os.File) (*net.UnixListener, error) {
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("a %T, not a unix socket", l)
	}
	return ul, nil
}

// takeOver asks the daemon serving the namespace to yield (OpYield) and
// claims the control socket once it has: bound again, or adopted from the
// keeper, which holds it for the next daemon.
func (s *Server) takeOver() (*net.UnixListener, error) {
	resp, d, err := call(Request{Op: OpYield})
	if err != nil {
		return nil, fmt.Errorf("taking over: %w", err)
	}
	defer d.Close()
	if resp.Errno != 0 {
		return nil, fmt.Errorf("taking over: %s: %w", resp.Error, syscall.Errno(resp.Errno))
	}
	d.Wait(time.Minute)
	for i := 0; ; i++ {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: SocketName, Net: "unix"})
		if errors.Is(err, syscall.EADDRINUSE) && errors.Is(holderError(), errHolderGone) {
			return s.adoptControl()
		}
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || i == 500 {
			return ln, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// errHolderGone: the control socket's listener has exited, its socket held
// on (by the keeper, for the next daemon, or by whatever a squatter left).
var errHolderGone = errors.New("the control socket's process has exited")

// closeControl stops accepting on the control socket; for a restart
// (OpRestart) its descriptor is kept first (RestartFD).
func (s *Server) closeControl() {
	s.mu.Lock()
	if s.restarting {
		// Keep the socket listening across the exec: connections
		// wait in its queue for the next program.
		if fd, err := dupListener(s.ln); err != nil {
			s.log.Warn("the control socket is not kept across the restart: someone may take it meanwhile", "err", err)
		} else {
			s.restartFD = fd
		}
	}
	s.mu.Unlock()
	s.ln.Close()
}

// RestartFD is the control socket's descriptor to hand to the program a
// restart executes (ControlFD), or 0.
func (s *Server) RestartFD() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restartFD
}

// dupListener duplicates ln's descriptor without close-on-exec.
func dupListener(ln *net.UnixListener) (int, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD, 3) }); err != nil {
		return 0, err
	}
	return fd, derr
}

// inheritedListener is the control socket a restarting daemon handed over
// (ControlFD), checked to be a listening socket at SocketName; nil, nil
// where there is none.
func inheritedListener() (*net.UnixListener, error) {
	v, ok := os.LookupEnv(ControlFD)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(ControlFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a descriptor", ControlFD, v)
	}
	unix.CloseOnExec(fd)
	sa, err := unix.Getsockname(fd)
	if u, ok := sa.(*unix.SockaddrUnix); err != nil || !ok || u.Name != SocketName {
		unix.Close(fd)
		return nil, fmt.Errorf("%s=%d: not the control socket (%v)", ControlFD, fd, err)
	}
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 1 {
		unix.Close(fd)
		return nil, fmt.Errorf("%s=%d: not listening", ControlFD, fd)
	}
	// This very process listened on it (before it executed itself): no
	// one can hand a daemon a socket of theirs to serve.
	if cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err != nil || int(cred.Pid) != os.Getpid() {
		unix.Close(fd)
		return nil, fmt.Errorf("%s=%d: not this process's socket", ControlFD, fd)
	}
	f := os.NewFile(uintptr(fd), "control")
	defer f.Close()
	ul, err := unixListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s=%d: %w", ControlFD, fd, err)
	}
	return ul, nil
}

// holderError says who holds the control socket: another daemon of this
// namespace (it runs as this daemon would, with CAP_NET_ADMIN over the
// namespace) or a squatter.
func holderError() error {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: SocketName, Net: "unix"})
	if err != nil {
		// Bound but not listening: no daemon does that.
		return fmt.Errorf("%w: bound by a process that does not accept connections (%v); find it with `ss -xlp src @l2tpu` and stop it", ErrSquatted, err)
	}
	defer c.Close()
	p, err := peer.Of(c)
	if errors.Is(err, peer.ErrGone) {
		return errHolderGone
	}
	if err != nil {
		return fmt.Errorf("%w (cannot identify it: %v)", ErrSquatted, err)
	}
	defer p.Close()
	if p.PID() == os.Getpid() {
		// This process listened on it before it executed itself
		// (a restart that did not hand the socket over): the keeper
		// holds it.
		return errHolderGone
	}
	ok, why, err := p.NetAdmin()
	switch {
	case errors.Is(err, peer.ErrGone):
		return errHolderGone
	case err != nil:
		why = err.Error()
	case ok && int(p.UID) == os.Geteuid():
		return fmt.Errorf("%w (pid %d)", ErrRunning, p.PID())
	case ok:
		why = "it is not root"
	}
	return fmt.Errorf("%w: pid %d (%s), uid %d: %s; stop that process", ErrSquatted, p.PID(), p.Comm(), p.UID, why)
}
