package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The soak: one l2tpu pseudowire (default parameters) under mixed load for
// a long while: a bulk TCP stream A→B, 64-byte UDP datagrams B→A at a fixed
// rate well below what the pseudowire carries, and pings A→B every 10 ms;
// beside it a second session of the same tunnel carries only pings, which
// must keep their latency (p99 within soakNeighbourP99).
// Every step it samples each daemon (RSS, goroutines, OS threads, fds) and
// the session counters. It fails when a figure grows without bound (the
// second half's peak well above the first half's) or when frames are lost
// that the kernel did not count as dropped for overload on the way.

// soakSample is one daemon's figures at one time.
type soakSample struct {
	At         time.Duration `json:"at_ns"`
	Daemon     string        `json:"daemon"`
	RSSKiB     int           `json:"rss_kib"`
	Goroutines int           `json:"goroutines"`
	Threads    int           `json:"threads"`
	FDs        int           `json:"fds"`
	TxPackets  uint64        `json:"tx_packets"`
	RxPackets  uint64        `json:"rx_packets"`
	RxErrors   uint64        `json:"rx_errors"`
}

// growth limits: a figure may rise this much from the first half's peak to
// the second half's before it counts as growing without bound.
var growth = map[string]struct {
	abs int
	rel float64
}{"rss_kib": {16 << 10, 0.25}, "goroutines": {4, 0}, "threads": {4, 0}, "fds": {2, 0}}

// soakNeighbourP99 is the most the quiet session's pings may take at the
// 99th percentile (lost ones counting as the longest).
const soakNeighbourP99 = 3 * time.Millisecond

func soak(d, step time.Duration) error {
	if d < 3*step {
		return fmt.Errorf("soak: %v is less than three samples of %v: nothing to compare", d, step)
	}
	l := setup("l2tpu")
	cleanups = append(cleanups, l.teardown)
	// The quiet session: pw1, 198.51.100.0/30.
	for k, e := range ends {
		must(in(e.ns, *l2tpu, "add", "session", "name", "pw1", "tunnel_id", e.id, "session_id", fmt.Sprint(sid(k, 1)), "peer_session_id", fmt.Sprint(sid(1-k, 1)))...)
		a, b := pwAddrs(0)
		inner(e.ns, "pw1", []string{a, b + "/30"}[k])
	}
	_, quietB := pwAddrs(0)
	dir := filepath.Join(*out, "soak")
	os.MkdirAll(dir, 0o755)
	secs := strconv.Itoa(int(d.Seconds()))
	// Servers: TCP in B, UDP in A (the datagrams flow B→A).
	tcpSrv := start(in(nsB, "iperf3", "-s", "-1", "-B", "203.0.113.2", "-p", "5201")...)
	udpSrv := start(in(nsA, "iperf3", "-s", "-1", "-B", "203.0.113.1", "-p", "5202")...)
	defer stop(tcpSrv)
	defer stop(udpSrv)
	time.Sleep(300 * time.Millisecond)
	drops0 := [2]uint64{udpDrops(nsA), udpDrops(nsB)}
	tcp := background(in(nsA, "iperf3", "-c", "203.0.113.2", "-p", "5201", "-t", secs, "-J")...)
	udp := background(in(nsB, "iperf3", "-c", "203.0.113.1", "-p", "5202", "-u", "-l", "64", "-b", "10M", "-t", secs, "-J")...)
	pings := background(in(nsA, "ping", "-q", "-n", "-i", "0.01", "-w", secs, "203.0.113.2")...)
	quiet := background(in(nsA, "ping", "-n", "-i", "0.01", "-w", secs, "-W", "1", quietB)...)
	progress("soak: %v of bulk TCP A→B, 64-byte UDP B→A at 10 Mb/s, ping every 10 ms; sampling every %v", d, step)

	var samples []soakSample
	var udpSrvDrops uint64
	begin := time.Now()
	for t := time.Duration(0); ; t += step {
		time.Sleep(time.Until(begin.Add(t)))
		ss, err := sampleDaemons(time.Since(begin))
		if err != nil {
			return err
		}
		samples = append(samples, ss...)
		udpSrvDrops = max(udpSrvDrops, socketDrops(nsA, 5202)) // gone when iperf3 ends
		for _, s := range ss {
			progress("soak %5.1f min %s: RSS %d KiB, %d goroutines, %d threads, %d fds, tx %d rx %d",
				s.At.Minutes(), s.Daemon, s.RSSKiB, s.Goroutines, s.Threads, s.FDs, s.TxPackets, s.RxPackets)
		}
		if t+step > d {
			break
		}
	}
	tr, ur, pr, qr := tcp(), udp(), pings(), quiet()
	time.Sleep(2 * time.Second) // let the last frames land
	final, err := sampleDaemons(time.Since(begin))
	if err != nil {
		return err
	}
	samples = append(samples, final...)
	drops := [2]uint64{udpDrops(nsA) - drops0[0], udpDrops(nsB) - drops0[1]}

	var fails []string
	if tr.err != nil {
		fails = append(fails, "TCP stream: "+tr.err.Error())
	}
	if ur.err != nil {
		fails = append(fails, "UDP stream: "+ur.err.Error())
	}
	var tj, uj iperfJSON
	json.Unmarshal([]byte(tr.out), &tj)
	json.Unmarshal([]byte(ur.out), &uj)
	fails = append(fails, growthFailures(samples)...)
	// Frames sent by one daemon and not received by the other must be
	// explained by drops the kernel counted at the receiving tunnel
	// socket (receive buffer full: overload; a GRO drop is up to 64
	// frames). Duplicates and receive errors (no sequencing, no cookies
	// here) are never right.
	a, b := final[0], final[1]
	lost := [2]int64{int64(a.TxPackets) - int64(b.RxPackets+b.RxErrors), int64(b.TxPackets) - int64(a.RxPackets+a.RxErrors)}
	tunDrops := [2]uint64{socketDrops(nsA, 1701), socketDrops(nsB, 1701)}
	for i, dir := range []string{"A→B", "B→A"} {
		switch recv := tunDrops[1-i]; {
		case lost[i] < 0:
			fails = append(fails, fmt.Sprintf("%s: %d frames received more than sent", dir, -lost[i]))
		case lost[i] > 0 && uint64(lost[i]) > recv*64:
			fails = append(fails, fmt.Sprintf("%s: %d frames lost, %d drops counted at the tunnel socket", dir, lost[i], recv))
		}
	}
	for _, x := range final {
		if x.RxErrors > 0 {
			fails = append(fails, fmt.Sprintf("%s: %d receive errors", x.Daemon, x.RxErrors))
		}
	}
	// The datagrams B→A iperf3 lost must be explained the same way: at
	// the interface in B (the TAP's queue full: tx_dropped), in the tunnel,
	// at A's interface or at iperf3's own socket in A: sampled while it
	// lives, and (iperf3's server and the tunnel's are A's only UDP
	// sockets) A's UDP input drops less the tunnel socket's.
	udpLoss := uj.End.Sum.LostPackets
	ifDrops := ifaceCounter(nsB, "tx_dropped") + ifaceCounter(nsA, "rx_dropped")
	udpSrvDrops = max(udpSrvDrops, drops[0]-min(drops[0], tunDrops[0]))
	explained := float64(ifDrops+udpSrvDrops) + float64(max(lost[1], 0))
	if udpLoss > explained+0.001*uj.End.Sum.Packets {
		fails = append(fails, fmt.Sprintf("UDP B→A: %.0f datagrams lost, %.0f explained by drops counted on the way", udpLoss, explained))
	}
	pingLoss := "?"
	if m := regexp.MustCompile(`([\d.]+)% packet loss`).FindStringSubmatch(pr.out); m != nil {
		pingLoss = m[1]
	}
	qs, qerr := pingStats(qr.out)
	if qerr != nil {
		fails = append(fails, "quiet session: "+qerr.Error())
	} else if p99 := time.Duration(qs.p99 * 1e3); p99 > soakNeighbourP99 {
		fails = append(fails, fmt.Sprintf("quiet session: ping p99 %v beside the loaded one, more than %v", p99, soakNeighbourP99))
	}

	var md strings.Builder
	fmt.Fprintf(&md, "Soak: %v, sampled every %v. Bulk TCP A→B %.2f Gb/s average; UDP 64 B B→A at 10 Mb/s: %.0f of %.0f lost; ping: %s%% lost. "+
		"Quiet session beside it: ping p50 %.0f µs, p99 %.0f µs, %.2f%% lost.\n",
		d, step, tj.End.SumReceived.BitsPerSecond/1e9, udpLoss, uj.End.Sum.Packets, pingLoss, qs.p50, qs.p99, qs.lossPct)
	fmt.Fprintf(&md, "Frames lost in the tunnel (one daemon's tx_packets less the other's rx_packets and rx_errors): A→B %d, B→A %d; "+
		"drops at the tunnel sockets: in A %d, in B %d. UDP datagrams dropped at iperf3's socket in A %d, at the interfaces %d; "+
		"UDP input drops in each namespace, all sockets: A %d, B %d.\n\n", lost[0], lost[1], tunDrops[0], tunDrops[1], udpSrvDrops, ifDrops, drops[0], drops[1])
	md.WriteString("| min | daemon | RSS KiB | goroutines | threads | fds | tx_packets | rx_packets |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range samples {
		fmt.Fprintf(&md, "| %.1f | %s | %d | %d | %d | %d | %d | %d |\n", s.At.Minutes(), s.Daemon, s.RSSKiB, s.Goroutines, s.Threads, s.FDs, s.TxPackets, s.RxPackets)
	}
	if len(fails) == 0 {
		md.WriteString("\nPASS: nothing grew without bound, no frame lost beyond the overload counted.\n")
	} else {
		md.WriteString("\nFAIL:\n- " + strings.Join(fails, "\n- ") + "\n")
	}
	fmt.Print(md.String())
	os.WriteFile(filepath.Join(dir, "soak.md"), []byte(md.String()), 0o644)
	j, _ := json.MarshalIndent(map[string]any{"duration_s": d.Seconds(), "samples": samples, "lost": lost, "tunnel_socket_drops": tunDrops,
		"quiet_ping_p50_us": qs.p50, "quiet_ping_p99_us": qs.p99, "quiet_ping_loss_pct": qs.lossPct,
		"udp_lost": udpLoss, "udp_server_drops": udpSrvDrops, "interface_drops": ifDrops, "udp_input_drops": drops, "failures": fails}, "", "  ")
	os.WriteFile(filepath.Join(dir, "soak.json"), j, 0o644)
	if len(fails) > 0 {
		return fmt.Errorf("soak failed: %s", strings.Join(fails, "; "))
	}
	return nil
}

// growthFailures compares each daemon's figures: the peak of the second
// half of the samples (the first one, the warm-up, left out) against the
// first half's.
func growthFailures(samples []soakSample) []string {
	var fails []string
	for _, name := range []string{nsA, nsB} {
		var ss []soakSample
		for _, s := range samples {
			if s.Daemon == name {
				ss = append(ss, s)
			}
		}
		if len(ss) < 3 {
			continue
		}
		ss = ss[1:]
		half := len(ss) / 2
		for fig, lim := range growth {
			get := func(s soakSample) int {
				return map[string]int{"rss_kib": s.RSSKiB, "goroutines": s.Goroutines, "threads": s.Threads, "fds": s.FDs}[fig]
			}
			var p1, p2 int
			for i, s := range ss {
				if i < half {
					p1 = max(p1, get(s))
				} else {
					p2 = max(p2, get(s))
				}
			}
			if allowed := p1 + max(lim.abs, int(float64(p1)*lim.rel)); p2 > allowed {
				fails = append(fails, fmt.Sprintf("%s %s grew from %d to %d", name, fig, p1, p2))
			}
		}
	}
	return fails
}

var runtimeLine = regexp.MustCompile(`msg=runtime goroutines=(\d+) .*threads=(\d+) fds=(\d+)`)

// sampleDaemons samples both daemons: RSS from /proc, the runtime figures
// a daemon logs on SIGUSR1, and the session counters from show.
func sampleDaemons(at time.Duration) ([]soakSample, error) {
	pids := daemonPIDs()
	if len(pids) != 2 {
		return nil, fmt.Errorf("soak: %d daemons running, want 2", len(pids))
	}
	var got []soakSample
	for i, e := range ends {
		s := soakSample{At: at, Daemon: e.ns}
		logPath := filepath.Join(*out, e.ns+"-daemon.log")
		before, _ := os.ReadFile(logPath)
		syscall.Kill(pids[i], syscall.SIGUSR1)
		for k := 0; k < 50; k++ {
			time.Sleep(20 * time.Millisecond)
			b, _ := os.ReadFile(logPath)
			if m := runtimeLine.FindAllSubmatch(b[min(len(before), len(b)):], -1); len(m) > 0 {
				last := m[len(m)-1]
				s.Goroutines, _ = strconv.Atoi(string(last[1]))
				s.Threads, _ = strconv.Atoi(string(last[2]))
				s.FDs, _ = strconv.Atoi(string(last[3]))
				break
			}
		}
		if s.Goroutines == 0 {
			return nil, fmt.Errorf("soak: %s logged no runtime figures on SIGUSR1 (%s)", e.ns, logPath)
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[i])); err == nil {
			if m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(st); m != nil {
				s.RSSKiB, _ = strconv.Atoi(string(m[1]))
			}
		}
		o, err := exec.Command("ip", "netns", "exec", e.ns, *l2tpu, "-s", "-j", "show", "session").Output()
		if err != nil {
			return nil, fmt.Errorf("soak: show session in %s: %v", e.ns, err)
		}
		var sess []showSession
		if err := json.Unmarshal(o, &sess); err != nil {
			return nil, fmt.Errorf("soak: show session in %s: %v %s", e.ns, err, o)
		}
		i := slices.IndexFunc(sess, func(x showSession) bool { return x.Interface == "pw0" })
		if i < 0 {
			return nil, fmt.Errorf("soak: no session pw0 in %s: %s", e.ns, o)
		}
		s.TxPackets, s.RxPackets, s.RxErrors = sess[i].Stats.TxPackets, sess[i].Stats.RxPackets, sess[i].Stats.RxErrors
		got = append(got, s)
	}
	return got, nil
}

// showSession is what the soak reads of l2tpu -s -j show session.
type showSession struct {
	Interface string `json:"interface"`
	Stats     struct {
		TxPackets uint64 `json:"tx_packets"`
		RxPackets uint64 `json:"rx_packets"`
		RxErrors  uint64 `json:"rx_errors"`
	} `json:"stats"`
}

// udpDrops is the UDP datagrams a namespace's kernel dropped on input
// (receive buffer full, or other input errors), from /proc/net/snmp.
func udpDrops(ns string) uint64 {
	o, err := sh(in(ns, "cat", "/proc/net/snmp")...)
	if err != nil {
		return 0
	}
	var head []string
	for _, line := range strings.Split(o, "\n") {
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		f := strings.Fields(line)
		if head == nil {
			head = f
			continue
		}
		var n uint64
		for i, name := range head {
			if name == "InErrors" && i < len(f) { // receive buffer errors included
				v, _ := strconv.ParseUint(f[i], 10, 64)
				n += v
			}
		}
		return n
	}
	return 0
}

var skDrops = regexp.MustCompile(`skmem:\([^)]*,d(\d+)\)`)

// socketDrops is what the kernel dropped at the UDP socket bound to port
// in ns (sk_drops: receive buffer full), from ss.
func socketDrops(ns string, port int) uint64 {
	o, err := sh(in(ns, "ss", "-uanmH", "sport", "=", ":"+strconv.Itoa(port))...)
	if err != nil {
		return 0
	}
	var n uint64
	for _, m := range skDrops.FindAllStringSubmatch(o, -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		n += v
	}
	return n
}

// ifaceCounter reads one of pw0's statistics in ns.
func ifaceCounter(ns, name string) uint64 {
	o, err := sh(in(ns, "cat", "/sys/class/net/pw0/statistics/"+name)...)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(o), 10, 64)
	return v
}
