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
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/cli"
	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/ipshim"
	"github.com/l2tpu/l2tpu/modshim"
	"github.com/l2tpu/l2tpu/tap"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	switch {
	case ipshim.IsShim(os.Args[0]):
		os.Exit(ipshim.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	case modshim.IsShim(os.Args[0]):
		os.Exit(modshim.Main(os.Args, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var (
		f         cli.Format
		force     bool
		verbose   bool
		batchFile string
		netnsName string
		all       = args
		nsAt      []int // where -n options are in all: run again without them
	)
	// ip's option loop: "-x" or "--x", any prefix of the long name.
	for len(args) > 0 && len(args[0]) > 1 && args[0][0] == '-' {
		opt := args[0]
		if len(opt) > 2 && opt[1] == '-' {
			opt = opt[1:]
		}
		switch {
		case cli.Matches(opt, "-stats"), cli.Matches(opt, "-statistics"):
			f.Stats = true
		case cli.Matches(opt, "-oneline"):
			f.Oneline = true
		case cli.Matches(opt, "-Version"):
			fmt.Fprintf(stdout, "l2tpu utility, l2tpu-%s\n", version)
			return 0
		case cli.Matches(opt, "-force"):
			force = true
		case cli.Matches(opt, "-batch"):
			if len(args) < 2 {
				io.WriteString(stderr, cli.Usage(cli.Prog))
				return cli.ExitUsage
			}
			args = args[1:]
			batchFile = args[0]
		case cli.Matches(opt, "-help"):
			io.WriteString(stderr, cli.Usage(cli.Prog))
			return cli.ExitUsage
		case cli.Matches(opt, "-netns"):
			if len(args) < 2 {
				io.WriteString(stderr, cli.Usage(cli.Prog))
				return cli.ExitUsage
			}
			nsAt = append(nsAt, len(all)-len(args))
			args = args[1:]
			netnsName = args[0]
		case cli.Matches(opt, "-json"):
			f.JSON = true
		case cli.Matches(opt, "-pretty"):
			f.Pretty = true
		case opt == "-v" || opt == "-verbose":
			verbose = true
		default:
			fmt.Fprintf(stderr, "Option \"%s\" is unknown, try \"l2tpu -help\".\n", args[0])
			return cli.ExitUsage
		}
		args = args[1:]
	}
	if netnsName != "" {
		var rest []string
		for i := 0; i < len(all); i++ {
			if slices.Contains(nsAt, i) {
				i++ // and its value
				continue
			}
			rest = append(rest, all[i])
		}
		return cli.EnterNetns(netnsName, append([]string{os.Args[0]}, rest...), stderr)
	}
	if len(args) > 0 && args[0] == "daemon" {
		return runDaemon(args[1:], verbose, stderr)
	}
	if len(args) > 0 && args[0] == "l2tp" { // `l2tpu l2tp add ...` reads like `ip l2tp add ...`
		args = args[1:]
	}
	r := &cli.Runner{Backend: daemon.NewClient(), Format: f, Out: stdout, Err: stderr}
	if batchFile != "" {
		return r.BatchFile(stdin, batchFile, force)
	}
	return r.Main(args)
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
	if len(args) == 1 && args[0] == "restart" {
		// An upgrade: the daemon executes its (new) executable again,
		// same PID, keeping everything.
		if err := daemon.Restart(); err != nil {
			fmt.Fprintf(stderr, "l2tpu daemon restart: %v\n", err)
			return 1
		}
		return 0
	}
	if len(args) > 0 && args[0] == "keeper" {
		return runKeeper(args[1:], stderr)
	}
	fs := flag.NewFlagSet("l2tpu daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o daemon.Options
	fs.BoolVar(&verbose, "v", verbose, "log debug detail")
	fs.BoolVar(&o.Keep, "keep", false, "on SIGTERM keep interfaces and state for the next daemon")
	fs.StringVar(&o.Group, "group", "", "a group whose members may change state (besides root)")
	fs.StringVar(&o.StatePath, "state", "", "state journal (default /run/l2tpu/net-cCOOKIE.state, by the namespace's cookie)")
	fs.TextVar(&o.Tuning.TAPBackend, "tap-backend", tap.Auto, "how TAP devices are created: auto, water or unix")
	fs.BoolVar(&o.Tuning.NoGSO, "no-gso", false, "byte-exact wire: no UDP GSO, so UDP checksum 0 where udp_csum/udp6_csum_tx are off, as the kernel sends (GSO needs real checksums)")
	fs.BoolVar(&o.Tuning.NoGRO, "no-gro", false, "never receive with UDP GRO")
	fs.BoolVar(&o.Tuning.IPProto115, "ip-proto115", false, "send IP-encapsulated messages through protocol-115 sockets that build the header (the earlier path: each then gets a copy of every message from its remote), not IPPROTO_RAW ones")
	fs.BoolVar(&o.Tuning.NoTSO, "no-tso", false, "read frames from the TAP one by one (no TSO super-frames)")
	fs.IntVar(&o.Tuning.TAPQueues, "tap-queues", 1, "queues per session TAP (IFF_MULTI_QUEUE when more than 1), each read by its own worker")
	fs.DurationVar(&o.OrphanCheck, "orphan-check", 10*time.Second, "how often to check that the network namespace still exists for someone else (stop when it does not)")
	fs.BoolVar(&o.Tuning.NoTAPGRO, "no-tap-gro", false, "write received TCP segments to the TAP one by one (no IFF_VNET_HDR coalescing)")
	procs := fs.Int("procs", 0, "threads moving frames (loops over the sessions and tunnels); 0: half the CPUs (at least 1)")
	fs.Bool("no-express", false, "no effect (accepted for configurations written for an earlier version)")
	fs.IntVar(&o.Tuning.RTPriority, "rt-priority", 10, "realtime priority (SCHED_FIFO) of the daemon's threads, which move frames ahead of every program as the kernel does; 0: ordinary threads")
	fs.DurationVar(&o.Tuning.Moderation, "moderation", 50*time.Microsecond, "how long a loop moving a few frames at a time at a high rate lets them gather between rounds (interrupt moderation); 0: never")
	fs.BoolVar(&o.Tuning.NoTurnaround, "no-turnaround", false, "leave what the stack answers to a frame written to a session's TAP to the transmit loop (woken), instead of sending it at once")
	fs.StringVar(&o.MetricsAddr, "metrics", "", "serve Prometheus metrics on ADDR (host:port; bind to loopback, e.g. 127.0.0.1:9115) at /metrics; off when empty")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	if o.Tuning.TAPQueues < 1 || o.Tuning.TAPQueues > tap.MaxQueues {
		fmt.Fprintf(stderr, "l2tpu daemon: -tap-queues %d: from 1 to %d\n", o.Tuning.TAPQueues, tap.MaxQueues)
		return cli.ExitUsage
	}
	if o.Tuning.Moderation < 0 || o.Tuning.Moderation > time.Millisecond {
		fmt.Fprintf(stderr, "l2tpu daemon: -moderation %v: from 0 to 1ms\n", o.Tuning.Moderation)
		return cli.ExitUsage
	}
	if *procs < 0 {
		fmt.Fprintf(stderr, "l2tpu daemon: -procs %d: 0 or more\n", *procs)
		return cli.ExitUsage
	}
	if o.Tuning.RTPriority < 0 || o.Tuning.RTPriority > 99 {
		fmt.Fprintf(stderr, "l2tpu daemon: -rt-priority %d: from 0 to 99\n", o.Tuning.RTPriority)
		return cli.ExitUsage
	}
	if *procs == 0 {
		// Half of what the runtime would use (the CPUs, or a container's
		// CPU limit). Measured on 2 CPUs (make bench, -procs 1 against
		// 2): TCP 4.39 against 3.52 Gb/s, 3.18 against 3.88 CPU s/GB.
		// Every byte the daemon moves costs the kernel as much again
		// (copies, the stacks on both sides of the TAP), on other CPUs.
		*procs = max(1, runtime.GOMAXPROCS(0)/2)
	}
	o.Tuning.Threads = *procs
	// One P for each loop: a spare P costs, the runtime waking threads to
	// look for work for it (and those threads are realtime).
	runtime.GOMAXPROCS(*procs)
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	o.Version = version
	o.Args = args
	// Under a service manager (systemd's NOTIFY_SOCKET), the service's
	// daemon takes the place of one a command started meanwhile.
	o.TakeOver = os.Getenv("NOTIFY_SOCKET") != ""
	if exe, err := os.Executable(); err == nil {
		o.KeeperExe = exe
	}
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
		if errors.Is(err, daemon.ErrRestart) {
			stop()
			if p := os.Getenv("L2TPU_CPUPROFILE"); p != "" {
				pprof.StopCPUProfile()
			}
			o.Logger.Info("restarting", "exe", o.KeeperExe)
			env := os.Environ()
			if fd := s.RestartFD(); fd > 0 {
				env = append(env, daemon.ControlFD+"="+strconv.Itoa(fd))
			}
			err = syscall.Exec(o.KeeperExe, os.Args, env)
			o.Logger.Error("cannot restart", "err", err)
		}
		return 1
	}
	return 0
}

// runKeeper is `l2tpu daemon keeper`, which a daemon starts: the process
// that holds its sockets and queues across a crash (daemon.RunKeeper).
func runKeeper(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("l2tpu daemon keeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	orphanCheck := fs.Duration("orphan-check", 10*time.Second, "how often to check, while no daemon is connected, that the network namespace still exists for someone else")
	sock := fs.String("socket", "", "the socket to listen on (the daemon's runtime directory)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *orphanCheck <= 0 || *sock == "" {
		return cli.ExitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT) // it goes when its daemon says so (or on SIGTERM)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		// What it holds closes with the process; its socket file would
		// not.
		os.Remove(*sock)
		os.Exit(0)
	}()
	if err := daemon.RunKeeper(log, *orphanCheck, *sock); err != nil {
		log.Error("keeper", "err", err)
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
