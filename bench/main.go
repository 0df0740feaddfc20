// Command bench measures l2tpu beside the alternatives on this machine, in
// one run: two network namespaces joined by veth, and between them direct
// veth, the kernel's VXLAN tunnel, QEMU's userspace l2tpv3 (guestless
// forwarders) and l2tpu, each carrying iperf3 TCP (one stream), iperf3 UDP
// with 64-byte payloads, and ping. It prints a table with ratios to VXLAN
// and QEMU and writes the results as JSON and an SVG chart.
//
// Run as root: go run ./bench (or make bench-net).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/proc"
)

var (
	secs   = flag.Int("t", 5, "seconds per iperf3 run")
	out    = flag.String("o", "build/bench", "output directory (results.json, results.svg, results.md)")
	l2tpu  = flag.String("l2tpu", "bin/l2tpu", "l2tpu binary")
	only   = flag.String("only", "", "comma-separated methods to run (direct,vxlan,qemu,l2tpu,l2tpu-exact,l2tpu-no-gro,l2tpu-no-tso,l2tpu-no-tapgro,l2tpu-none,l2tpu-1proc)")
	prefix = fmt.Sprintf("lb%d", os.Getpid()%10000)
	nsA    = prefix + "a"
	nsB    = prefix + "b"
)

// variants are l2tpu's runs: every fast path on (the default), each
// turned off by its daemon flag, and the default with the Go runtime on one
// P.
var variants = map[string]struct {
	flags []string
	note  string
	env   []string // NAME=value for the daemon
}{
	"l2tpu":           {nil, "l2tpu UDP/IPv4, default parameters and fast paths, MTU 1446", nil},
	"l2tpu-exact":     {[]string{"-no-gso"}, "byte-exact wire (-no-gso: checksum 0 as the kernel sends, no UDP GSO)", nil},
	"l2tpu-no-gro":    {[]string{"-no-gro"}, "-no-gro: no UDP GRO on receive", nil},
	"l2tpu-no-tso":    {[]string{"-no-tso"}, "-no-tso: no TSO super-frames from the TAP", nil},
	"l2tpu-no-tapgro": {[]string{"-no-tap-gro"}, "-no-tap-gro: no IFF_VNET_HDR (no TSO, no coalescing on the TAP)", nil},
	"l2tpu-none":      {[]string{"-no-gso", "-no-gro", "-no-tap-gro"}, "every fast path off (batching only)", nil},
	"l2tpu-1proc":     {nil, "default, daemon with GOMAXPROCS=1 (no Go scheduler hand-offs between threads)", []string{"GOMAXPROCS=1"}},
}

// Result is one method's figures.
type Result struct {
	Method    string  `json:"method"`
	TCPGbps   float64 `json:"tcp_gbps"`
	UDP64Kpps float64 `json:"udp64_kpps"`
	RTTus     float64 `json:"rtt_us"`
	Note      string  `json:"note,omitempty"`
}

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

// topology: A 192.0.2.1 ── veth ── B 192.0.2.2; each method adds an inner
// link with 203.0.113.1 (A) and 203.0.113.2 (B).
func topology() {
	must("ip", "netns", "add", nsA)
	cleanups = append(cleanups, func() { sh("ip", "netns", "del", nsA) })
	must("ip", "netns", "add", nsB)
	cleanups = append(cleanups, func() { sh("ip", "netns", "del", nsB) })
	must("ip", "link", "add", prefix+"va", "netns", nsA, "type", "veth", "peer", "name", prefix+"vb", "netns", nsB)
	for _, x := range [][3]string{{nsA, prefix + "va", "192.0.2.1/24"}, {nsB, prefix + "vb", "192.0.2.2/24"}} {
		must(in(x[0], "ip", "link", "set", "lo", "up")...)
		must(in(x[0], "ip", "addr", "add", x[2], "dev", x[1])...)
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

func inner(ns, dev, cidr string) {
	sh(in(ns, "sysctl", "-qw", "net.ipv6.conf."+dev+".disable_ipv6=1")...)
	must(in(ns, "ip", "addr", "add", cidr, "dev", dev)...)
	must(in(ns, "ip", "link", "set", dev, "up")...)
}

// setup builds a method's link and returns how to remove it.
func setup(method string) (target string, teardown func(), note string) {
	switch method {
	case "direct":
		return "192.0.2.2", func() {}, "veth, no tunnel"
	case "vxlan":
		for _, x := range [][3]string{{nsA, "192.0.2.2", "203.0.113.1/24"}, {nsB, "192.0.2.1", "203.0.113.2/24"}} {
			must(in(x[0], "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "remote", x[1], "dstport", "4789")...)
			inner(x[0], "vx0", x[2])
		}
		return "203.0.113.2", func() {
			sh(in(nsA, "ip", "link", "del", "vx0")...)
			sh(in(nsB, "ip", "link", "del", "vx0")...)
		}, "kernel VXLAN, MTU 1450"
	case "qemu":
		var cmds []*exec.Cmd
		for _, x := range [][5]string{{nsA, "192.0.2.1", "192.0.2.2", "203.0.113.1/24", "0x1"}, {nsB, "192.0.2.2", "192.0.2.1", "203.0.113.2/24", "0x2"}} {
			tx, rx := "0x1", "0x2"
			if x[4] == "0x2" {
				tx, rx = "0x2", "0x1"
			}
			cmd := start(in(x[0], "qemu-system-x86_64", "-M", "none", "-nodefaults", "-nographic",
				"-netdev", "l2tpv3,id=l2,src="+x[1]+",dst="+x[2]+",udp=on,srcport=1701,dstport=1701,txsession="+tx+",rxsession="+rx+",counter=on,pincounter=on",
				"-netdev", "tap,id=t,ifname=qt0,script=no,downscript=no",
				"-netdev", "hubport,id=h1,hubid=0,netdev=l2", "-netdev", "hubport,id=h2,hubid=0,netdev=t")...)
			cmds = append(cmds, cmd)
			for i := 0; i < 100; i++ {
				if _, err := sh(in(x[0], "ip", "link", "show", "qt0")...); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			must(in(x[0], "ip", "link", "set", "qt0", "mtu", "1446")...)
			inner(x[0], "qt0", x[3])
		}
		return "203.0.113.2", func() {
			for _, c := range cmds {
				stop(c)
			}
		}, "QEMU l2tpv3 UDP, guestless, MTU 1446"
	default:
		v, ok := variants[method]
		if !ok {
			break
		}
		for _, x := range [][6]string{{nsA, "100", "200", "192.0.2.1", "192.0.2.2", "203.0.113.1/24"}, {nsB, "200", "100", "192.0.2.2", "192.0.2.1", "203.0.113.2/24"}} {
			// The daemon is started here with the variant's flags (a
			// client would start one with none).
			err := netns.Do("/run/netns/"+x[0], func() error {
				for _, e := range v.env {
					k, val, _ := strings.Cut(e, "=")
					os.Setenv(k, val)
					defer os.Unsetenv(k)
				}
				return daemon.Start(*l2tpu, filepath.Join(*out, x[0]+"-daemon.log"), v.flags...)
			})
			if err != nil {
				fatal(err)
			}
			args := []string{*l2tpu, "add", "tunnel", "session", "tunnel_id", x[1], "peer_tunnel_id", x[2],
				"local", x[3], "remote", x[4], "udp_sport", "1701", "udp_dport", "1701",
				"session_id", x[1], "peer_session_id", x[2], "name", "pw0"}
			must(in(x[0], args...)...)
			inner(x[0], "pw0", x[5])
		}
		return "203.0.113.2", func() {
			for _, ns := range []string{nsA, nsB} {
				daemon.StopInNamespace("/run/netns/" + ns)
			}
		}, v.note
	}
	fatal(fmt.Errorf("unknown method %s", method))
	return "", nil, ""
}

type iperfJSON struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		Sum struct {
			Packets     float64 `json:"packets"`
			LostPackets float64 `json:"lost_packets"`
			Seconds     float64 `json:"seconds"`
		} `json:"sum"`
	} `json:"end"`
}

func iperf(target string, udp bool) (float64, error) {
	srv := start(in(nsB, "iperf3", "-s", "-1", "-B", target)...)
	defer stop(srv)
	time.Sleep(300 * time.Millisecond)
	args := in(nsA, "iperf3", "-c", target, "-t", strconv.Itoa(*secs), "-J")
	if udp {
		args = append(args, "-u", "-l", "64", "-b", "0")
	}
	o, err := sh(args...)
	if err != nil {
		return 0, err
	}
	var j iperfJSON
	if err := json.Unmarshal([]byte(o), &j); err != nil {
		return 0, err
	}
	if udp {
		if j.End.Sum.Seconds == 0 {
			return 0, fmt.Errorf("no UDP result")
		}
		return (j.End.Sum.Packets - j.End.Sum.LostPackets) / j.End.Sum.Seconds / 1000, nil
	}
	return j.End.SumReceived.BitsPerSecond / 1e9, nil
}

var rttRe = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)

func rtt(target string) (float64, error) {
	o, err := sh(in(nsA, "ping", "-q", "-n", "-c", "200", "-i", "0.005", target)...)
	if err != nil {
		return 0, err
	}
	m := rttRe.FindStringSubmatch(o)
	if m == nil {
		return 0, fmt.Errorf("ping: %s", o)
	}
	ms, _ := strconv.ParseFloat(m[1], 64)
	return ms * 1000, nil
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces)")
		os.Exit(1)
	}
	methods := []string{"direct", "vxlan", "qemu", "l2tpu", "l2tpu-exact", "l2tpu-no-gro", "l2tpu-no-tso", "l2tpu-no-tapgro", "l2tpu-none", "l2tpu-1proc"}
	if *only != "" {
		methods = strings.Split(*only, ",")
	}
	topology()
	defer cleanup()
	var results []Result
	for _, m := range methods {
		if m == "qemu" {
			if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
				progress("qemu: not installed, skipped")
				continue
			}
		}
		progress("%s: setting up", m)
		target, teardown, note := setup(m)
		r := Result{Method: m, Note: note}
		var err error
		progress("%s: ping", m)
		if r.RTTus, err = rtt(target); err != nil {
			progress("%s: %v", m, err)
		}
		progress("%s: iperf3 TCP, %ds", m, *secs)
		if r.TCPGbps, err = iperf(target, false); err != nil {
			progress("%s: %v", m, err)
		}
		progress("%s: iperf3 UDP 64-byte, %ds", m, *secs)
		if r.UDP64Kpps, err = iperf(target, true); err != nil {
			progress("%s: %v", m, err)
		}
		progress("%s: TCP %.2f Gb/s, UDP64 %.0f kpps, RTT %.0f µs", m, r.TCPGbps, r.UDP64Kpps, r.RTTus)
		teardown()
		results = append(results, r)
	}
	report(results)
}

func find(rs []Result, m string) *Result {
	for i := range rs {
		if rs[i].Method == m {
			return &rs[i]
		}
	}
	return nil
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func report(rs []Result) {
	os.MkdirAll(*out, 0o755)
	host, _ := os.Hostname()
	cpus, _ := sh("nproc")
	kernel, _ := sh("uname", "-r")
	head := fmt.Sprintf("%s, %s cores, Linux %s, %s", host, strings.TrimSpace(cpus), strings.TrimSpace(kernel), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	vx, q := find(rs, "vxlan"), find(rs, "qemu")
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s. iperf3 %d s per run, one TCP stream; UDP 64-byte payloads at full rate (received kpps); ping RTT average of 200.\n\n", head, *secs)
	b.WriteString("| method | TCP Gb/s | ×VXLAN | ×QEMU | UDP 64 B kpps | ×VXLAN | ×QEMU | RTT µs | ×VXLAN | note |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		var vt, vu, vr, qt, qu float64
		if vx != nil {
			vt, vu, vr = vx.TCPGbps, vx.UDP64Kpps, vx.RTTus
		}
		if q != nil {
			qt, qu = q.TCPGbps, q.UDP64Kpps
		}
		fmt.Fprintf(&b, "| %s | %.2f | %s | %s | %.0f | %s | %s | %.0f | %s | %s |\n", r.Method, r.TCPGbps, ratio(r.TCPGbps, vt), ratio(r.TCPGbps, qt),
			r.UDP64Kpps, ratio(r.UDP64Kpps, vu), ratio(r.UDP64Kpps, qu), r.RTTus, ratio(r.RTTus, vr), r.Note)
	}
	fmt.Print(b.String())
	os.WriteFile(filepath.Join(*out, "results.md"), []byte(b.String()), 0o644)
	j, _ := json.MarshalIndent(map[string]any{"machine": head, "seconds": *secs, "results": rs}, "", "  ")
	os.WriteFile(filepath.Join(*out, "results.json"), j, 0o644)
	os.WriteFile(filepath.Join(*out, "results.svg"), []byte(chart(rs, head)), 0o644)
	progress("wrote %s/results.{md,json,svg}", *out)
}

// chart draws three panels (TCP, UDP 64 B, RTT) of horizontal bars, one
// row per method with its name once on the left, each panel scaled to its
// largest value and the figures written after the bars.
func chart(rs []Result, head string) string {
	const w, left, top, rowH, bar = 1000, 150, 78, 30, 20
	h := top + len(rs)*rowH + 30
	colors := []string{"#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#72b7b2", "#eeca3b", "#ff9da6", "#9d755d", "#bab0ac"}
	metrics := []struct {
		name   string
		get    func(Result) float64
		format string
	}{{"TCP throughput, one stream", func(r Result) float64 { return r.TCPGbps }, "%.2f Gb/s"},
		{"UDP 64-byte rate", func(r Result) float64 { return r.UDP64Kpps }, "%.0f kpps"},
		{"ping RTT (lower is better)", func(r Result) float64 { return r.RTTus }, "%.0f µs"}}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="10" y="24" font-size="16">l2tpu beside direct veth, kernel VXLAN and QEMU l2tpv3</text><text x="10" y="42" fill="#555">%s</text>`, head)
	for ri, r := range rs {
		y := top + ri*rowH
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`, y+bar-5, r.Method)
	}
	pw := (w - left) / len(metrics)
	for mi, m := range metrics {
		x0 := left + mi*pw
		max := 0.0
		for _, r := range rs {
			if v := m.get(r); v > max {
				max = v
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`, x0, top-14, m.name)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, x0, top-6, x0, top+len(rs)*rowH-6)
		for ri, r := range rs {
			v := m.get(r)
			l := 0.0
			if max > 0 {
				l = v / max * float64(pw-100)
			}
			y := top + ri*rowH
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%d" fill="%s"/><text x="%.0f" y="%d">%s</text>`,
				x0, y, l, bar, colors[ri%len(colors)], float64(x0)+l+5, y+bar-5, fmt.Sprintf(m.format, v))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}
