package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/peer"
	"github.com/l2tpu/l2tpu/metrics"
	"github.com/l2tpu/l2tpu/tap"
)

// Options configure the daemon.
type Options struct {
	// StatePath is the journal; "" means this namespace's file under
	// RunDir (none where the kernel gives no namespace cookie: see
	// NamespaceID).
	StatePath string
	// Keep leaves interfaces and state in place on SIGTERM, for a restart
	// that picks them up again; by default a clean stop removes them.
	Keep bool
	// Group, if set, may change and show state as well as root.
	Group string
	// Logger receives the daemon's logs.
	Logger *slog.Logger
	Tuning dataplane.Tuning
	// RetryInterval is how often restores that failed are retried besides
	// on address and link changes; 0 means 10 s.
	RetryInterval time.Duration
	// OrphanCheck is how often the daemon checks that its network
	// namespace still exists for someone else (see orphaned); when it does
	// not, the daemon stops as on SIGTERM without Keep. 0 means 10 s.
	OrphanCheck time.Duration
	// MetricsAddr, if set, is a TCP host:port at which /metrics serves
	// Prometheus metrics (see package metrics); port 0 picks a free one
	// (see Server.MetricsAddr). The counters are otherwise for
	// CAP_NET_ADMIN only: bind it to loopback.
	MetricsAddr string
	// Version is the daemon's version, for l2tpu_build_info.
	Version string
	// Args are the daemon's flags as given (l2tpu daemon ARGS...), recorded
	// with the state so that a daemon started on demand after a crash runs
	// with them too (options.go).
	Args []string
	// TakeOver makes a daemon that finds another serving the namespace
	// take its place (the other stops as with -keep, its keeper holding
	// everything) instead of exiting: what a service manager's daemon
	// does to one that a command started meanwhile.
	TakeOver bool
	// KeeperExe, if set, is the l2tpu executable that runs this
	// namespace's descriptor keeper (`KeeperExe daemon keeper`, see
	// RunKeeper), started if none runs, so that a crash releases no
	// socket: only where state is kept (a journal).
	KeeperExe string
}

// ControlFD is the environment variable with which a restarting daemon
// hands its control socket, still listening, to the program it executes
// (so that nobody can take the name in between): the descriptor's number.
const ControlFD = "L2TPU_CONTROL_FD"

// ErrRestart: Serve stopped for a restart (OpRestart): the caller executes
// the daemon again (Options.KeeperExe), same PID and arguments.
var ErrRestart = errors.New("restart requested")

// ErrRunning: another daemon already serves this network namespace.
var ErrRunning = errors.New("an l2tpu daemon already runs in this network namespace")

// ErrSquatted: the control socket is held by a process that is not a
// daemon of this namespace's root.
var ErrSquatted = errors.New("the control socket @l2tpu of this network namespace is held by another user's process")

// Limits on what clients can make the daemon hold.
const (
	maxConns        = 64 // connections at once
	maxConnsPerUser = 8
	requestTimeout  = 5 * time.Second // to send a request, and to take a reply
)

// Server is a running daemon.
type Server struct {
	opt    Options
	log    *slog.Logger
	paths  Paths
	cookie uint64
	m      *dataplane.Manager
	ln     *net.UnixListener
	mln    atomic.Pointer[net.Listener] // metrics; nil when off or not bound yet
	msrv   *http.Server                 // metrics; nil when off
	gid    int                          // -1 when no group is configured
	limit  *logLimiter
	keeper *keeperClient // nil: none

	mu         sync.Mutex // serialises changes and restores
	j          *journal   // nil: nothing is kept across restarts
	pendingT   map[uint32]string
	pendingS   map[sessionKey]string
	lastNS     map[sessionKey]uint32
	retry      chan struct{}
	stopServe  context.CancelFunc // ends Serve (OpStop, OpRestart)
	restarting bool               // OpRestart: Serve returns ErrRestart
	restartFD  int                // the control socket kept for the restart (0: none)
	gone       bool               // the namespace is gone: its files go too

	connMu sync.Mutex
	conns  int
	byUser map[uint32]int
	wg     sync.WaitGroup
}

// Listen claims this namespace's control socket (the bind is the lock that
// keeps a second daemon out), starts the dataplane and restores the state
// an earlier daemon recorded. What cannot be restored yet is kept and
// retried (see Serve).
func Listen(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RetryInterval == 0 {
		o.RetryInterval = 10 * time.Second
	}
	if o.OrphanCheck == 0 {
		o.OrphanCheck = 10 * time.Second
	}
	s := &Server{opt: o, log: o.Logger, gid: -1, limit: newLogLimiter(o.Logger),
		pendingT: map[uint32]string{}, pendingS: map[sessionKey]string{}, lastNS: map[sessionKey]uint32{},
		retry: make(chan struct{}, 1), byUser: map[uint32]int{}, stopServe: func() {}}
	if o.Group != "" {
		g, err := user.LookupGroup(o.Group)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", o.Group, err)
		}
		s.gid, _ = strconv.Atoi(g.Gid)
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
	ln, err := inheritedListener()
	if ln == nil && err == nil {
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: SocketName, Net: "unix"})
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		err = holderError()
		if errors.Is(err, ErrRunning) && o.TakeOver {
			s.log.Info("another daemon serves the namespace: taking its place", "other", err)
			ln, err = s.takeOver()
		} else if errors.Is(err, errHolderGone) {
			ln, err = s.adoptControl()
		}
	}
	if err != nil {
		if s.keeper != nil {
			s.keeper.close()
		}
		return nil, err
	}
	s.ln = ln
	// A taken metrics address does not stop the daemon: any local user
	// can bind a port, and must not keep tunnels from being restored.
	// Serve keeps trying it.
	if o.MetricsAddr != "" {
		s.bindMetrics()
	}
	statePath := o.StatePath
	if statePath == "" && stable {
		statePath = s.paths.State
	}
	t := newTable()
	if statePath == "" {
		s.log.Warn("state is not kept across restarts", "why", ErrNoCookie)
	} else {
		var note string
		t, note, err = loadJournal(statePath, s.cookie)
		if errors.Is(err, ErrEarlierBoot) {
			// Not this namespace's: set aside (for an administrator to
			// look at), never restored here.
			aside := statePath + ".earlier-boot"
			if rerr := os.Rename(statePath, aside); rerr == nil {
				s.log.Warn("state file set aside, not restored", "file", aside, "why", err)
				t, note, err = newTable(), "", nil
			}
		}
		if err != nil {
			s.closeListeners()
			return nil, err
		}
		if note != "" {
			s.log.Warn("state file", "file", statePath, "note", note)
		}
		if s.j, err = openJournal(statePath, s.cookie, t); err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("state file %s: %w", statePath, err)
		}
	}
	from := "the command line"
	if os.Getenv(OptionsFromRecord) == "1" {
		from = "the record of the daemon before (started on demand after it died)"
	}
	s.log.Info("options", "args", o.Args, "from", from)
	if s.j != nil && o.Args != nil {
		if err := recordOptions(s.paths.Options, o.Args, s.cookie); err != nil {
			s.log.Warn("options not recorded: a daemon started on demand after a crash would run without them", "err", err)
		}
	}
	owner := &tap.Owner{UID: os.Geteuid(), GID: s.gid}
	dopt := dataplane.Options{Logger: o.Logger, PersistTAP: s.j != nil, Tuning: o.Tuning, Owner: owner, Recorder: s}
	if s.keeper == nil && s.j != nil && o.KeeperExe != "" {
		k, err := connectKeeper(o.KeeperExe, os.Stderr, o.OrphanCheck, s.paths.Keeper)
		if err != nil {
			s.log.Warn("sockets are not kept across a crash: a restart opens them again", "err", err)
		} else {
			s.keeper = k
			s.log.Info("descriptor keeper", "holds", len(k.kept), "pid", k.pid)
		}
	}
	if s.keeper != nil {
		dopt.Keeper = s.keeper
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
	s.m, err = dataplane.New(dopt)
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
	return s, nil
}

// The daemon's Manager is what the metrics read.
var _ metrics.Source = (*dataplane.Manager)(nil)

// setupMetrics makes the HTTP server for s.mln; Serve runs it.
func (s *Server) setupMetrics() error {
	reg, err := metrics.NewRegistry(s.m, s.opt.Version)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg, s.log))
	s.msrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      time.Minute,      // ample for 10,000 sessions
		IdleTimeout:       10 * time.Second, // connections are few (metricsConns)
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return nil
}

// metricsConns bounds the connections the metrics server holds: any local
// user can connect, and must not use up the daemon's descriptors.
const metricsConns = 16

// bindMetrics tries to listen on the metrics address; it reports whether
// it does now.
func (s *Server) bindMetrics() bool {
	if s.mln.Load() != nil {
		return true
	}
	ln, err := net.Listen("tcp", s.opt.MetricsAddr)
	if err != nil {
		s.limit.warn("metrics: cannot listen; retried every few seconds. Give -metrics a free host:port (e.g. 127.0.0.1:9115) or stop what holds it",
			"addr", s.opt.MetricsAddr, "err", err)
		return false
	}
	ln = netutil.LimitListener(ln, metricsConns)
	s.mln.Store(&ln)
	addr := ln.Addr().(*net.TCPAddr)
	if !addr.IP.IsLoopback() {
		// Allowed, but not quietly: anyone who reaches the port sees
		// what `ip l2tp show` shows only to CAP_NET_ADMIN.
		s.log.Warn("metrics are served beyond loopback: anyone who reaches this address sees every tunnel's and session's counters; bind to 127.0.0.1 unless a firewall keeps it private",
			"addr", addr.String())
	}
	s.log.Info("serving metrics", "url", "http://"+addr.String()+"/metrics")
	return true
}

// MetricsAddr is the address the metrics are served on (useful with port
// 0), or nil when they are off.
func (s *Server) MetricsAddr() net.Addr {
	if ln := s.mln.Load(); ln != nil {
		return (*ln).Addr()
	}
	return nil
}

func (s *Server) closeListeners() {
	s.ln.Close()
	if ln := s.mln.Load(); ln != nil {
		(*ln).Close()
	}
}

// serveMetrics answers scrapes until stopMetrics, binding the address
// first if Listen could not.
func (s *Server) serveMetrics(ctx context.Context) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for !s.bindMetrics() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	if err := s.msrv.Serve(*s.mln.Load()); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("metrics server stopped", "err", err)
	}
}

// stopMetrics lets scrapes under way finish (for a few seconds at most),
// then closes the metrics server.
func (s *Server) stopMetrics() {
	if s.msrv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.msrv.Shutdown(ctx); err != nil {
		s.log.Warn("metrics server: scrapes cut short at stop", "err", err)
		s.msrv.Close()
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
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("the keeper's control socket is a %T", l)
	}
	s.log.Info("control socket adopted from the keeper")
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
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("%s=%d: not a unix socket", ControlFD, fd)
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

// Serve answers requests until ctx is done, then stops: without Keep every
// interface and the state file are removed, as the kernel's state goes with
// its namespace.
func (s *Server) Serve(ctx context.Context) error {
	if s.j != nil {
		os.MkdirAll(s.paths.Dir, 0o700)
		// Written aside and renamed: on a full filesystem the write
		// fails and the file is left as it was, never cut empty.
		tmp := s.paths.PID + ".tmp"
		err := os.WriteFile(tmp, pidRecord(), 0o644)
		if err == nil {
			err = os.Rename(tmp, s.paths.PID)
		}
		if err != nil {
			os.Remove(tmp)
			s.log.Warn("pid file", "err", err)
		}
		defer os.Remove(s.paths.PID)
	}
	notify("READY=1")
	ctx, orphan := context.WithCancel(ctx)
	defer orphan()
	s.mu.Lock()
	s.stopServe = orphan
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
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
	}()
	go s.watchNamespace(ctx, orphan)
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	go s.checkpoints(bg)
	go s.retries(bg)
	if s.msrv != nil {
		go s.serveMetrics(bg)
	}
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.limit.warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.admit(c)
	}
	s.mu.Lock()
	restarting := s.restarting
	s.mu.Unlock()
	if restarting {
		notify("RELOADING=1") // the same PID says READY=1 again
	} else {
		notify("STOPPING=1")
	}
	s.stopMetrics()
	stopBG()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stop(); err != nil || !restarting {
		return err
	}
	return ErrRestart
}

// stop ends the dataplane. With Keep the journal gets the exact sequence
// numbers and everything stays; otherwise every interface (pending ones
// too) and the journal go.
func (s *Server) stop() error {
	var errs []error
	if s.opt.Keep {
		if err := s.checkpoint(true); err != nil {
			errs = append(errs, err)
		}
	} else {
		for k := range s.pendingS {
			if r, ok := s.j.session(k); ok {
				tap.RemovePersistent(r.Interface)
			}
		}
	}
	if err := s.m.Close(!s.opt.Keep); err != nil {
		errs = append(errs, err)
	}
	if s.keeper != nil {
		if !s.opt.Keep {
			if err := s.keeper.quit(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.restarting && len(errs) == 0 {
			s.keeper.closeRestart()
		} else {
			s.keeper.close()
		}
	}
	if s.j != nil {
		s.j.close()
		if !s.opt.Keep {
			os.Remove(s.j.path)
			os.Remove(s.paths.Options)
		}
		if s.gone && s.j.path == s.paths.State {
			os.Remove(s.paths.Log)
		}
	}
	s.log.Info("stopped", "kept", s.opt.Keep)
	return errors.Join(errs...)
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

// every calls fn each period until ctx is done or fn returns false.
func every(ctx context.Context, period time.Duration, fn func() bool) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !fn() {
			return
		}
	}
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

// watchNamespace stops the daemon once its namespace is gone for everyone
// else (see orphaned). It stops as with Keep: if something the daemon
// cannot see still holds the namespace, a later command restores it all.
func (s *Server) watchNamespace(ctx context.Context, stop func()) {
	self, points := nsMounts()
	if len(points) == 0 {
		s.log.Info("the network namespace has no name (ip netns) in this mount table: the daemon stays until stopped", "netns", self)
		return // never mounted: never given up
	}
	s.log.Info("watching the network namespace: the daemon stops once it is deleted and empty", "netns", self, "mounted_at", points)
	every(ctx, s.opt.OrphanCheck, func() bool {
		if !orphaned(self, s.keeperPID()) {
			return true
		}
		held, why := heldElsewhere(self, s.keeperPID())
		s.mu.Lock()
		if held {
			s.log.Info("the network namespace was deleted and nothing else is in it, but it may be held: stopping as with -keep",
				"mounted_at", points, "why", why)
			s.opt.Keep = true
		} else {
			// No namespace can ever have this one's cookie, so no
			// daemon would ever read its files again.
			s.log.Info("the network namespace is gone: stopping, its state and files with it", "mounted_at", points)
			s.opt.Keep, s.gone = false, true
		}
		s.mu.Unlock()
		stop()
		return false
	})
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

func (s *Server) keeperPID() int {
	if s.keeper == nil {
		return 0
	}
	return s.keeper.alivePID()
}

// Close stops the server without Serve (tests).
func (s *Server) Close() error {
	s.closeListeners()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop()
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
