package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
)

// The Server's jobs, a file each: listen.go claims the control socket and
// starts the daemon (Listen), handing the socket over across a restart;
// serve.go runs it until it stops (Serve, stop); handle.go answers each
// connection; restore.go restores the recorded state and retries what is
// pending; record.go writes changes and sequence checkpoints to the
// journal (journal.go); metricsserve.go serves the metrics; orphan.go
// stops the daemon once its namespace is gone.

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

// withDefaults fills in what o leaves to the daemon: a logger that
// discards, and 10 s for RetryInterval and OrphanCheck.
func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RetryInterval == 0 {
		o.RetryInterval = 10 * time.Second
	}
	if o.OrphanCheck == 0 {
		o.OrphanCheck = 10 * time.Second
	}
	return o
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
