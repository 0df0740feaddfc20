// Command bench measures l2tpu beside the alternatives on this machine, in
// one run: two network namespaces joined by veth, and between them direct
// veth, the kernel's VXLAN tunnel, the kernel's own L2TPv3 pseudowire
// (where the host has its modules), QEMU's userspace l2tpv3 (guestless
// forwarders), wireguard-go and l2tpu. Each carries iperf3 TCP (one
// stream; CPU seconds per GB and ping under that load measured alongside),
// iperf3 UDP with 64-byte payloads, and many pings. Those that carry
// several pseudowires (VXLAN, QEMU, l2tpu) are measured under load too
// (loaded.go): a 64-byte flood on one pseudowire beside pings through
// another of the same tunnel and of another tunnel, and 2, 8 and 64
// pseudowires each carrying a TCP stream at once. It prints tables with
// ratios to VXLAN and QEMU and writes the results as JSON and an SVG
// chart.
//
// With -soak DURATION it runs one l2tpu pseudowire under mixed load
// instead (soak.go).
//
// Run as root: make bench (or make soak DURATION=30m).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/internal/proc"
)

var (
	secs     = flag.Int("t", 5, "seconds per iperf3 run")
	pings    = flag.Int("pings", 1000, "pings (2 ms apart) for the idle RTT figures")
	out      = flag.String("o", "build/bench", "output directory (results.json, results.svg, results.md)")
	l2tpu    = flag.String("l2tpu", "bin/l2tpu", "l2tpu binary")
	only     = flag.String("only", "", "comma-separated methods to run ("+strings.Join(allMethods, ",")+")")
	loaded   = flag.Bool("loaded", true, "measure under load too: neighbour under flood, fairness")
	sessions = flag.String("sessions", "2,8,64", "fairness: how many pseudowires carry a TCP stream at once (comma-separated)")
	soakFor  = flag.Duration("soak", 0, "run the soak instead: one l2tpu pseudowire under mixed load for this long")
	soakStep = flag.Duration("soak-interval", time.Minute, "soak: how often to sample")
	prefix   = fmt.Sprintf("lb%d", os.Getpid()%10000)
	nsA      = prefix + "a"
	nsB      = prefix + "b"
)

// allMethods in the order they run and are shown.
var allMethods = []string{"direct", "vxlan", "kernel-l2tp", "qemu", "wireguard-go", "l2tpu", "l2tpu-ip", "l2tpu-udp6", "l2tpu-ip6", "l2tpu-no-rt", "l2tpu-no-mod", "l2tpu-exact", "l2tpu-no-gro", "l2tpu-no-tso", "l2tpu-no-tapgro", "l2tpu-none", "l2tpu-2proc", "l2tpu-no-turn"}

// loadedVariants of l2tpu are measured under load too (the others change
// the single flow's path only).
var loadedVariants = map[string]bool{"l2tpu": true, "l2tpu-no-rt": true, "l2tpu-no-mod": true, "l2tpu-2proc": true}

func sh(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func must(args ...string) string {
	out, err := sh(args...)
	if err != nil {
		fatal(err)
	}
	return out
}

func in(ns string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, args...)
}

var cleanups []func()

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	cleanup()
	os.Exit(1)
}

func cleanup() {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func progress(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }

// topology: A 192.0.2.1, 2001:db8::1 ── veth ── B 192.0.2.2, 2001:db8::2;
// each method adds an inner
// link with 203.0.113.1 (A) and 203.0.113.2 (B).
func topology() {
	must("ip", "netns", "add", nsA)
	cleanups = append(cleanups, func() { sh("ip", "netns", "del", nsA) })
	must("ip", "netns", "add", nsB)
	cleanups = append(cleanups, func() { sh("ip", "netns", "del", nsB) })
	must("ip", "link", "add", prefix+"va", "netns", nsA, "type", "veth", "peer", "name", prefix+"vb", "netns", nsB)
	for _, x := range [][4]string{{nsA, prefix + "va", "192.0.2.1/24", "2001:db8::1/64"}, {nsB, prefix + "vb", "192.0.2.2/24", "2001:db8::2/64"}} {
		must(in(x[0], "ip", "link", "set", "lo", "up")...)
		must(in(x[0], "ip", "addr", "add", x[2], "dev", x[1])...)
		must(in(x[0], "ip", "addr", "add", x[3], "dev", x[1], "nodad")...)
		must(in(x[0], "ip", "link", "set", x[1], "up")...)
	}
}

// start runs a background process and registers its end (by PID).
func start(args ...string) *exec.Cmd {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fatal(err)
	}
	return cmd
}

func stop(cmd *exec.Cmd) { proc.Stop(cmd, 5*time.Second) }

// result is a background command's output and error.
type result struct {
	out string
	err error
}

// background starts a command that is stopped on every way out (cleanup),
// and returns how to wait for its end and output.
func background(args ...string) func() result {
	var out bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	cleanups = append(cleanups, func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
	})
	return func() result {
		err := <-done
		done <- err // the cleanup may wait too
		if err != nil {
			err = fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out.String())
		}
		return result{out.String(), err}
	}
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces)")
		os.Exit(1)
	}
	topology()
	defer cleanup()
	if *soakFor > 0 {
		if err := soak(*soakFor, *soakStep); err != nil {
			fatal(err)
		}
		return
	}
	methods := allMethods
	if *only != "" {
		methods = strings.Split(*only, ",")
	}
	var results []Result
	var missing []Missing
	for _, m := range methods {
		if why := unavailable(m); why != "" {
			progress("%s: not measured: %s", m, why)
			missing = append(missing, Missing{m, why})
			continue
		}
		progress("%s: setting up", m)
		l := setup(m)
		r := measure(m, l)
		l.teardown()
		if *loaded && loadedMethod(m) && (!strings.HasPrefix(m, "l2tpu") || loadedVariants[m]) {
			measureLoaded(m, &r)
		}
		results = append(results, r)
	}
	report(results, missing)
}

// measureLoaded runs the measures under load (loaded.go).
func measureLoaded(m string, r *Result) {
	neighbour(m, r)
	for _, f := range strings.Split(*sessions, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > maxPWs {
			fatal(fmt.Errorf("-sessions %s: from 1 to %d each", *sessions, maxPWs))
		}
		r.Fairness = append(r.Fairness, fairness(m, n))
	}
}

// measure runs every measure over one link.
func measure(m string, l link) Result {
	r := Result{Method: m, Note: l.note}
	progress("%s: %d pings", m, *pings)
	if st, err := ping(l.target, *pings, 2*time.Millisecond); err != nil {
		progress("%s: %v", m, err)
	} else {
		r.RTTus, r.RTTp50us, r.RTTp99us = st.mean, st.p50, st.p99
	}
	progress("%s: iperf3 TCP, %ds, with pings and CPU accounting", m, *secs)
	if err := tcpUnderLoad(l, &r); err != nil {
		progress("%s: %v", m, err)
	}
	progress("%s: iperf3 UDP 64-byte, %ds", m, *secs)
	var err error
	if r.UDP64Kpps, err = iperfUDP(l.target); err != nil {
		progress("%s: %v", m, err)
	}
	progress("%s: TCP %.2f Gb/s (%.2f CPU s/GB, %.2f own), UDP64 %.0f kpps, RTT p50 %.0f p99 %.0f µs, under load p50 %.0f p99 %.0f µs",
		m, r.TCPGbps, r.CPUsPerGB, r.OwnCPUsPerGB, r.UDP64Kpps, r.RTTp50us, r.RTTp99us, r.LoadRTTp50us, r.LoadRTTp99us)
	return r
}
