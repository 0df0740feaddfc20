// Command l2tpu is a drop-in for `ip l2tp` backed by a userspace dataplane:
// `l2tpu add tunnel ...` where a script said `ip l2tp add tunnel ...`.
// State lives in a per-network-namespace daemon (`l2tpu daemon`), started
// on demand by the first `add`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/cli"
	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/tap"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

func matches(arg, word string) bool { return arg != "" && strings.HasPrefix(word, arg) }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var (
		f         cli.Format
		force     bool
		verbose   bool
		batchFile string
	)
	// ip's option loop: "-x" or "--x", any prefix of the long name.
	for len(args) > 0 && len(args[0]) > 1 && args[0][0] == '-' {
		opt := args[0]
		if len(opt) > 2 && opt[1] == '-' {
			opt = opt[1:]
		}
		switch {
		case matches(opt, "-stats"), matches(opt, "-statistics"):
			f.Stats = true
		case matches(opt, "-oneline"):
			f.Oneline = true
		case matches(opt, "-Version"):
			fmt.Fprintf(stdout, "l2tpu utility, l2tpu-%s\n", version)
			return 0
		case matches(opt, "-force"):
			force = true
		case matches(opt, "-batch"):
			if len(args) < 2 {
				io.WriteString(stderr, cli.Usage())
				return cli.ExitUsage
			}
			args = args[1:]
			batchFile = args[0]
		case matches(opt, "-help"):
			io.WriteString(stderr, cli.Usage())
			return cli.ExitUsage
		case matches(opt, "-json"):
			f.JSON = true
		case matches(opt, "-pretty"):
			f.Pretty = true
		case opt == "-v" || opt == "-verbose":
			verbose = true
		default:
			fmt.Fprintf(stderr, "Option \"%s\" is unknown, try \"l2tpu -help\".\n", args[0])
			return cli.ExitUsage
		}
		args = args[1:]
	}
	if len(args) > 0 && args[0] == "daemon" {
		return runDaemon(args[1:], verbose, stderr)
	}
	if len(args) > 0 && args[0] == "l2tp" { // `l2tpu l2tp add ...` reads like `ip l2tp add ...`
		args = args[1:]
	}
	r := &cli.Runner{Backend: &client{}, Format: f, Out: stdout, Err: stderr}
	if batchFile != "" {
		in := stdin
		if batchFile != "-" {
			fh, err := os.Open(batchFile)
			if err != nil {
				fmt.Fprintf(stderr, "Cannot open file \"%s\" for reading: %s\n", batchFile, cli.Strerror(errnoOf(err)))
				return 1
			}
			defer fh.Close()
			in = fh
		}
		return r.Batch(in, batchFile, force)
	}
	return r.Main(args)
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// client is the cli.Backend that talks to this namespace's daemon,
// starting it on the first change.
type client struct{}

func (client) call(req daemon.Request, start bool) (daemon.Response, error) {
	resp, err := daemon.Call(req)
	if errors.Is(err, daemon.ErrNotRunning) && !start && os.Geteuid() == 0 {
		// A state file without a daemon: it died. Bring it back (it
		// restores the state) rather than answer as if nothing existed.
		if p, perr := daemon.DefaultPaths(); perr == nil {
			if _, serr := os.Stat(p.State); serr == nil {
				start = true
			}
		}
	}
	if errors.Is(err, daemon.ErrNotRunning) && start {
		if os.Geteuid() != 0 {
			return resp, fmt.Errorf("l2tpu: only root may start the daemon: %w", syscall.EPERM)
		}
		if err := startDaemon(); err != nil {
			if errors.Is(err, daemon.ErrImpostor) {
				return resp, cli.Abort(err)
			}
			fmt.Fprintf(os.Stderr, "l2tpu: cannot start the daemon: %v\n", err)
			return resp, syscall.EIO
		}
		resp, err = daemon.Call(req)
	}
	if errors.Is(err, daemon.ErrImpostor) {
		return resp, cli.Abort(err)
	}
	if err != nil {
		return resp, err
	}
	if resp.Errno != 0 {
		return resp, fmt.Errorf("%s: %w", resp.Error, syscall.Errno(resp.Errno))
	}
	return resp, nil
}

func startDaemon() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	p, err := daemon.DefaultPaths()
	if err != nil {
		return err
	}
	// -keep: a SIGTERM that reaches it with its caller's session or
	// service (it starts in the caller's cgroup) must not delete what it
	// holds; the next command restores it. l2tpu daemon stop deletes.
	return daemon.Start(exe, p.Log, "-keep")
}

func (c client) AddTunnel(t dataplane.TunnelConfig) error {
	_, err := c.call(daemon.Request{Op: daemon.OpAddTunnel, Tunnel: &t}, true)
	return err
}

func (c client) AddSession(s dataplane.SessionConfig) error {
	_, err := c.call(daemon.Request{Op: daemon.OpAddSession, Session: &s}, true)
	return err
}

// Without a daemon there is nothing to delete: the kernel's answer is ENODEV.
func (c client) DeleteTunnel(id uint32) error {
	_, err := c.call(daemon.Request{Op: daemon.OpDelTunnel, TunnelID: id}, false)
	if errors.Is(err, daemon.ErrNotRunning) {
		return syscall.ENODEV
	}
	return err
}

func (c client) DeleteSession(tid, sid uint32) error {
	_, err := c.call(daemon.Request{Op: daemon.OpDelSession, TunnelID: tid, SessionID: sid}, false)
	if errors.Is(err, daemon.ErrNotRunning) {
		return syscall.ENODEV
	}
	return err
}

// Without a daemon there is nothing to show.
func (c client) List() ([]dataplane.TunnelInfo, []dataplane.SessionInfo, error) {
	resp, err := c.call(daemon.Request{Op: daemon.OpList}, false)
	if errors.Is(err, daemon.ErrNotRunning) {
		return nil, nil, nil
	}
	return resp.Tunnels, resp.Sessions, err
}

func runDaemon(args []string, verbose bool, stderr io.Writer) int {
	if len(args) == 1 && args[0] == "stop" {
		// For scripts and operators: end this namespace's daemon (by the
		// PID it recorded), which deletes what it holds unless -keep.
		if _, err := daemon.Stop(""); err != nil {
			fmt.Fprintf(stderr, "l2tpu daemon stop: %v\n", err)
			return 1
		}
		return 0
	}
	fs := flag.NewFlagSet("l2tpu daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o daemon.Options
	fs.BoolVar(&verbose, "v", verbose, "log debug detail")
	fs.BoolVar(&o.Keep, "keep", false, "on SIGTERM keep interfaces and state for the next daemon")
	fs.StringVar(&o.Group, "group", "", "a group whose members may change state (besides root)")
	fs.StringVar(&o.StatePath, "state", "", "state journal (default /run/l2tpu/net-cCOOKIE.state, by the namespace's cookie)")
	backend := fs.String("tap-backend", "auto", "how TAP devices are created: auto, water or unix")
	fs.BoolVar(&o.Tuning.NoGSO, "no-gso", false, "byte-exact wire: no UDP GSO, so UDP checksum 0 where udp_csum/udp6_csum_tx are off, as the kernel sends (GSO needs real checksums)")
	fs.BoolVar(&o.Tuning.NoGRO, "no-gro", false, "never receive with UDP GRO")
	fs.BoolVar(&o.Tuning.NoTSO, "no-tso", false, "read frames from the TAP one by one (no TSO super-frames)")
	fs.IntVar(&o.Tuning.TAPQueues, "tap-queues", 1, "queues per session TAP (IFF_MULTI_QUEUE when more than 1), each read by its own worker")
	fs.DurationVar(&o.OrphanCheck, "orphan-check", 10*time.Second, "how often to check that the network namespace still exists for someone else (stop when it does not)")
	fs.BoolVar(&o.Tuning.NoTAPGRO, "no-tap-gro", false, "write received TCP segments to the TAP one by one (no IFF_VNET_HDR coalescing)")
	procs := fs.Int("procs", 0, "threads running Go code at once (GOMAXPROCS); 0: $GOMAXPROCS if set, else half the CPUs (at least 1), leaving the rest to the kernel's half of the work")
	fs.BoolVar(&o.Tuning.NoTurnaround, "no-turnaround", false, "leave what the stack answers to a frame written to a session's TAP to the transmit loop (woken), instead of sending it at once")
	fs.StringVar(&o.MetricsAddr, "metrics", "", "serve Prometheus metrics on ADDR (host:port; bind to loopback, e.g. 127.0.0.1:9115) at /metrics; off when empty")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	switch *backend {
	case "auto":
	case "water":
		o.Tuning.TAPBackend = tap.Water
	case "unix":
		o.Tuning.TAPBackend = tap.Unix
	default:
		fmt.Fprintf(stderr, "l2tpu daemon: unknown -tap-backend %q (auto, water or unix)\n", *backend)
		return cli.ExitUsage
	}
	if o.Tuning.TAPQueues < 1 || o.Tuning.TAPQueues > tap.MaxQueues {
		fmt.Fprintf(stderr, "l2tpu daemon: -tap-queues %d: from 1 to %d\n", o.Tuning.TAPQueues, tap.MaxQueues)
		return cli.ExitUsage
	}
	if *procs < 0 {
		fmt.Fprintf(stderr, "l2tpu daemon: -procs %d: 0 or more\n", *procs)
		return cli.ExitUsage
	}
	switch {
	case *procs > 0:
		runtime.GOMAXPROCS(*procs)
	case os.Getenv("GOMAXPROCS") == "":
		// Half of what the runtime would use (the CPUs, or a container's
		// CPU limit). Measured on 2 CPUs (make bench, -procs 1 against
		// 2): TCP 4.39 against 3.52 Gb/s, 3.18 against 3.88 CPU s/GB.
		// Every byte the daemon moves costs the kernel as much again
		// (copies, the stacks on both sides of the TAP), on other CPUs.
		runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)/2))
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	o.Version = version
	s, err := daemon.Listen(o)
	if err != nil {
		o.Logger.Error("cannot start", "err", err)
		if errors.Is(err, daemon.ErrRunning) {
			return 0 // another daemon of root's serves this namespace: nothing to do
		}
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// For performance work: L2TPU_CPUPROFILE=FILE profiles until the stop.
	if p := os.Getenv("L2TPU_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1) // before "ready": from then on SIGUSR1 must not kill
	defer signal.Stop(usr1)
	go logRuntimeOnSignal(ctx, usr1, o.Logger)
	o.Logger.Info("l2tpu daemon ready", "version", version, "pid", os.Getpid())
	if err := s.Serve(ctx); err != nil {
		return 1
	}
	return 0
}

// logRuntimeOnSignal logs the daemon's own figures on SIGUSR1 (make soak
// samples them; operators may too): goroutines, heap, OS threads, fds.
func logRuntimeOnSignal(ctx context.Context, c <-chan os.Signal, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c:
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fds, _ := os.ReadDir("/proc/self/fd")
			log.Info("runtime", "goroutines", runtime.NumGoroutine(), "heap_inuse", ms.HeapInuse, "sys", ms.Sys,
				"threads", threadCount(), "fds", len(fds))
		}
	}
}

func threadCount() int {
	ts, _ := os.ReadDir("/proc/self/task")
	return len(ts)
}
