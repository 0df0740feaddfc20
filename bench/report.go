package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Result is one method's figures.
type Result struct {
	Method    string  `json:"method"`
	TCPGbps   float64 `json:"tcp_gbps"`
	UDP64Kpps float64 `json:"udp64_kpps"`
	RTTus     float64 `json:"rtt_us"` // mean of the idle pings
	RTTp50us  float64 `json:"rtt_p50_us"`
	RTTp99us  float64 `json:"rtt_p99_us"`
	// Pings every 10 ms while the TCP stream runs.
	LoadRTTp50us float64 `json:"load_rtt_p50_us"`
	LoadRTTp99us float64 `json:"load_rtt_p99_us"`
	// CPU seconds per GB of TCP received: the whole machine's (iperf3
	// and the kernel included), and the method's own processes' (the
	// daemons or QEMUs; 0 for the kernel's tunnels, whose work is all in
	// the machine's figure).
	CPUsPerGB    float64 `json:"cpu_s_per_gb"`
	OwnCPUsPerGB float64 `json:"own_cpu_s_per_gb"`
	// Under load (loaded.go), for methods that carry several
	// pseudowires.
	Neighbour *Neighbour `json:"neighbour,omitempty"`
	Fairness  []Fairness `json:"fairness,omitempty"`
	Note      string     `json:"note,omitempty"`
}

// Missing is a method that could not run here, and why.
type Missing struct {
	Method string `json:"method"`
	Reason string `json:"reason"`
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

func report(rs []Result, missing []Missing) {
	os.MkdirAll(*out, 0o755)
	host, _ := os.Hostname()
	cpus, _ := sh("nproc")
	kernel, _ := sh("uname", "-r")
	head := fmt.Sprintf("%s, %s cores, Linux %s, %s", host, strings.TrimSpace(cpus), strings.TrimSpace(kernel), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	md := table(rs, missing, head)
	fmt.Print(md)
	os.WriteFile(filepath.Join(*out, "results.md"), []byte(md), 0o644)
	j, _ := json.MarshalIndent(map[string]any{"machine": head, "seconds": *secs, "pings": *pings, "results": rs, "missing": missing}, "", "  ")
	os.WriteFile(filepath.Join(*out, "results.json"), j, 0o644)
	os.WriteFile(filepath.Join(*out, "results.svg"), []byte(chart(rs, head)), 0o644)
	progress("wrote %s/results.{md,json,svg}", *out)
}

// table is the Markdown report: each figure with its ratio to VXLAN's, and
// to QEMU's where QEMU is the userspace yardstick.
func table(rs []Result, missing []Missing, head string) string {
	var vx, q Result
	if r := find(rs, "vxlan"); r != nil {
		vx = *r
	}
	if r := find(rs, "qemu"); r != nil {
		q = *r
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s. iperf3 %d s per run, one TCP stream; UDP 64-byte payloads at full rate (received kpps); "+
		"RTT from %d pings 2 ms apart, and under load from pings every 10 ms during the TCP run; CPU seconds per GB of TCP received, "+
		"whole machine (anything else running on the host included) and the method's own processes.\n\n", head, *secs, *pings)
	b.WriteString("| method | TCP Gb/s | ×VXLAN | ×QEMU | CPU s/GB | ×VXLAN | own CPU s/GB | UDP 64 B kpps | ×VXLAN | ×QEMU | RTT p50 µs | p99 | mean | ×QEMU | loaded p50 µs | p99 | note |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.2f | %s | %s | %.2f | %s | %.2f | %.0f | %s | %s | %.0f | %.0f | %.0f | %s | %.0f | %.0f | %s |\n",
			r.Method, r.TCPGbps, ratio(r.TCPGbps, vx.TCPGbps), ratio(r.TCPGbps, q.TCPGbps),
			r.CPUsPerGB, ratio(r.CPUsPerGB, vx.CPUsPerGB), r.OwnCPUsPerGB,
			r.UDP64Kpps, ratio(r.UDP64Kpps, vx.UDP64Kpps), ratio(r.UDP64Kpps, q.UDP64Kpps),
			r.RTTp50us, r.RTTp99us, r.RTTus, ratio(r.RTTp50us, q.RTTp50us), r.LoadRTTp50us, r.LoadRTTp99us, r.Note)
	}
	for _, m := range missing {
		fmt.Fprintf(&b, "\nNot measured: **%s**: %s.\n", m.Method, m.Reason)
	}
	b.WriteString(loadedTable(rs))
	return b.String()
}

// loadedTable is the measures under load, for the methods that have them.
func loadedTable(rs []Result) string {
	var b strings.Builder
	var ns []int
	for _, r := range rs {
		if len(r.Fairness) > len(ns) {
			ns = ns[:0]
			for _, f := range r.Fairness {
				ns = append(ns, f.Sessions)
			}
		}
	}
	fmt.Fprintf(&b, "\nUnder load: a 64-byte UDP flood (iperf3 -u -l 64 -b 0 -P 2, %d s) on one pseudowire, pings every 10 ms through another "+
		"of the same tunnel (sessions of one l2tpu tunnel, VNIs of one VXLAN port; QEMU has none) and of another tunnel; a lost ping counts as the longest. "+
		"Fairness: a TCP stream through each of n pseudowires of one tunnel at once (QEMU: n processes), Jain's index of their throughputs "+
		"(bytes each pseudowire's interface received over a common window of the run's length, opened once all of them carry traffic) "+
		"and the aggregate against the method's single stream above. Loaded RTT: pings through the pseudowire one TCP stream fills (table above).\n\n", *secs)
	b.WriteString("| method | flood alone kpps | same tunnel: ping p50 / p99 µs | lost | flood kpps | other tunnel: ping p50 / p99 µs | lost | flood kpps | loaded RTT p50 / p99 µs |")
	for _, n := range ns {
		fmt.Fprintf(&b, " %d streams: Jain | agg Gb/s |", n)
	}
	b.WriteString("\n|---|---|---|---|---|---|---|---|---|")
	for range ns {
		b.WriteString("---|---|")
	}
	b.WriteString("\n")
	ping := func(p *NeighbourPing, alone float64) string {
		if p == nil {
			return "– | – | –"
		}
		return fmt.Sprintf("%.0f / %.0f | %.1f%% | %.0f (%s)", p.P50us, p.P99us, p.LossPct, p.FloodKpps, ratio(p.FloodKpps, alone))
	}
	for _, r := range rs {
		if r.Neighbour == nil && len(r.Fairness) == 0 {
			continue
		}
		n := r.Neighbour
		if n == nil {
			n = &Neighbour{}
		}
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %.0f / %.0f |", r.Method, n.FloodAloneKpps, ping(n.Same, n.FloodAloneKpps), ping(n.Other, n.FloodAloneKpps), r.LoadRTTp50us, r.LoadRTTp99us)
		for i := range ns {
			if i >= len(r.Fairness) || r.Fairness[i].Err != "" {
				b.WriteString(" – | – |")
				continue
			}
			f := r.Fairness[i]
			fmt.Fprintf(&b, " %.3f | %.2f (%s) |", f.Jain, f.AggGbps, ratio(f.AggGbps, r.TCPGbps))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// chart draws one panel per figure, of horizontal bars, one row per method
// with its name once on the left, each panel scaled to its largest value
// and the figures written after the bars.
func chart(rs []Result, head string) string {
	const left, top, rowH, bar, panel = 150, 78, 30, 20, 240
	h := top + len(rs)*rowH + 30
	colors := []string{"#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#72b7b2", "#eeca3b", "#ff9da6", "#9d755d", "#bab0ac", "#79706e"}
	metrics := []struct {
		name   string
		get    func(Result) float64 // < 0: not measured
		format string
	}{{"TCP throughput, one stream", func(r Result) float64 { return r.TCPGbps }, "%.2f Gb/s"},
		{"CPU s per GB (lower is better)", func(r Result) float64 { return r.CPUsPerGB }, "%.2f s/GB"},
		{"UDP 64-byte rate", func(r Result) float64 { return r.UDP64Kpps }, "%.0f kpps"},
		{"ping RTT p50 (lower is better)", func(r Result) float64 { return r.RTTp50us }, "%.0f µs"},
		{"RTT p99 under TCP load", func(r Result) float64 { return r.LoadRTTp99us }, "%.0f µs"},
		{"neighbour ping p99, flood in the same tunnel", func(r Result) float64 { return neighbourP99(r, true) }, "%.0f µs"},
		{"neighbour ping p99, flood in another tunnel", func(r Result) float64 { return neighbourP99(r, false) }, "%.0f µs"},
		{"Jain's index, most TCP streams", func(r Result) float64 { return lastFairness(r, func(f Fairness) float64 { return f.Jain }) }, "%.3f"},
		{"aggregate TCP, most streams", func(r Result) float64 { return lastFairness(r, func(f Fairness) float64 { return f.AggGbps }) }, "%.2f Gb/s"}}
	w := left + len(metrics)*panel
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="10" y="24" font-size="16">l2tpu beside direct veth, the kernel's tunnels and QEMU l2tpv3</text><text x="10" y="42" fill="#555">%s</text>`, head)
	for ri, r := range rs {
		y := top + ri*rowH
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`, y+bar-5, r.Method)
	}
	pw := panel
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
			y := top + ri*rowH
			if v < 0 {
				fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#999">–</text>`, x0+5, y+bar-5)
				continue
			}
			l := 0.0
			if max > 0 {
				l = v / max * float64(pw-90)
			}
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%d" fill="%s"/><text x="%.0f" y="%d">%s</text>`,
				x0, y, l, bar, colors[ri%len(colors)], float64(x0)+l+5, y+bar-5, fmt.Sprintf(m.format, v))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// neighbourP99 is the neighbour's ping p99 beside the flood (-1: none).
func neighbourP99(r Result, same bool) float64 {
	if r.Neighbour == nil {
		return -1
	}
	p := r.Neighbour.Other
	if same {
		p = r.Neighbour.Same
	}
	if p == nil {
		return -1
	}
	return p.P99us
}

// lastFairness is a figure of the run with the most streams (-1: none).
func lastFairness(r Result, get func(Fairness) float64) float64 {
	if len(r.Fairness) == 0 || r.Fairness[len(r.Fairness)-1].Err != "" {
		return -1
	}
	return get(r.Fairness[len(r.Fairness)-1])
}
