package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"time"
)

// The measures under load: how a pseudowire fares beside a busy one
// (neighbour), and how several busy ones share (fairness).

// Neighbour is a flood of 64-byte UDP datagrams (iperf3 -u -l 64 -b 0
// -P 2) on one pseudowire, with pings every 10 ms through another: of the
// same tunnel, and of another tunnel.
type Neighbour struct {
	FloodAloneKpps float64        `json:"flood_alone_kpps"`
	Same           *NeighbourPing `json:"same_tunnel,omitempty"`
	Other          *NeighbourPing `json:"other_tunnel,omitempty"`
}

// NeighbourPing is one run: the pings' round trips (a lost ping counts as
// the longest seen), their loss, and the flood's own rate meanwhile.
type NeighbourPing struct {
	P50us     float64 `json:"ping_p50_us"`
	P99us     float64 `json:"ping_p99_us"`
	LossPct   float64 `json:"ping_loss_pct"`
	FloodKpps float64 `json:"flood_kpps"`
}

// Fairness is n pseudowires of one tunnel, a TCP stream through each at
// once: Jain's index of their throughputs, and the sum.
type Fairness struct {
	Sessions int     `json:"sessions"`
	Jain     float64 `json:"jain"`
	AggGbps  float64 `json:"aggregate_gbps"`
	MinGbps  float64 `json:"min_gbps"`
	MaxGbps  float64 `json:"max_gbps"`
	Err      string  `json:"error,omitempty"`
}

// floodArgs are the flood's iperf3 arguments.
func floodArgs() []string {
	return []string{"-t", strconv.Itoa(*secs), "-u", "-l", "64", "-b", "0", "-P", "2"}
}

// neighbour runs the flood alone, then beside pings of the same tunnel and
// of another.
func neighbour(m string, r *Result) {
	p := setupPWs(m, 2, true)
	defer p.teardown()
	var n Neighbour
	progress("%s: 64-byte flood alone", m)
	j, err := iperf(p.same[0], floodArgs()...)
	if err != nil {
		progress("%s: %v", m, err)
		return
	}
	n.FloodAloneKpps = delivered(j)
	run := func(target string) *NeighbourPing {
		pc := make(chan pinged, 1)
		go func() {
			time.Sleep(500 * time.Millisecond)
			st, err := ping(target, (*secs-1)*100, 10*time.Millisecond)
			pc <- pinged{st, err}
		}()
		j, err := iperf(p.same[0], floodArgs()...)
		pr := <-pc
		if err != nil || pr.err != nil {
			progress("%s: %v %v", m, err, pr.err)
			return nil
		}
		return &NeighbourPing{P50us: pr.st.p50, P99us: pr.st.p99, LossPct: pr.st.lossPct, FloodKpps: delivered(j)}
	}
	if p.sameTunnel {
		progress("%s: flood, pings through a session of the same tunnel", m)
		n.Same = run(p.same[1])
	}
	progress("%s: flood, pings through another tunnel", m)
	n.Other = run(p.other)
	r.Neighbour = &n
	for _, x := range []struct {
		what string
		p    *NeighbourPing
	}{{"same tunnel", n.Same}, {"other tunnel", n.Other}} {
		if x.p != nil {
			progress("%s: %s: ping p50 %.0f p99 %.0f µs, %.1f%% lost; flood %.0f kpps (alone %.0f)", m, x.what, x.p.P50us, x.p.P99us, x.p.LossPct, x.p.FloodKpps, n.FloodAloneKpps)
		}
	}
}

// delivered is a UDP run's rate received, in kpps.
func delivered(j iperfJSON) float64 {
	if j.End.Sum.Seconds == 0 {
		return 0
	}
	return (j.End.Sum.Packets - j.End.Sum.LostPackets) / j.End.Sum.Seconds / 1000
}

type pinged struct {
	st  rttStats
	err error
}

// fairness runs a TCP stream through each of n pseudowires at once and
// measures them over a common window, by the bytes each pseudowire's
// interface in B received (iperf3's own per-stream rates cover each
// stream's own time, and 64 streams start seconds apart on 2 CPUs): the
// window opens once every interface has received, and lasts -t seconds.
func fairness(m string, n int) Fairness {
	f := Fairness{Sessions: n}
	p := setupPWs(m, n, false)
	defer p.teardown()
	progress("%s: %d TCP streams at once, one a pseudowire", m, n)
	var srvs []func()
	for _, t := range p.same {
		srv := start(in(nsB, "iperf3", "-s", "-1", "-B", t)...)
		srvs = append(srvs, func() { stop(srv) })
	}
	defer func() {
		for _, s := range srvs {
			s()
		}
	}()
	time.Sleep(time.Duration(300+10*n) * time.Millisecond)
	base, err := rxBytes(p.devs)
	if err != nil {
		f.Err = err.Error()
		return f
	}
	var clients []*exec.Cmd
	for _, t := range p.same {
		clients = append(clients, start(in(nsA, "iperf3", "-c", t, "-t", "120")...))
	}
	defer func() {
		for _, c := range clients {
			stop(c)
		}
	}()
	// Every stream flowing (or 20 s): then a second more to settle.
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		now, err := rxBytes(p.devs)
		if err == nil && allMoved(base, now) {
			break
		}
	}
	time.Sleep(time.Second)
	t0 := time.Now()
	from, err := rxBytes(p.devs)
	if err == nil {
		time.Sleep(time.Duration(*secs) * time.Second)
	}
	to, err2 := rxBytes(p.devs)
	el := time.Since(t0).Seconds()
	if err = cmp.Or(err, err2); err != nil {
		f.Err = err.Error()
		progress("%s: %s", m, f.Err)
		return f
	}
	rates := make([]float64, n)
	for i := range rates {
		rates[i] = float64(to[i]-from[i]) * 8 / el / 1e9
	}
	var sum, sq float64
	f.MinGbps = rates[0]
	for _, x := range rates {
		sum += x
		sq += x * x
		f.MinGbps, f.MaxGbps = min(f.MinGbps, x), max(f.MaxGbps, x)
	}
	f.AggGbps = sum
	if sq > 0 {
		f.Jain = sum * sum / (float64(n) * sq)
	}
	progress("%s: %d streams: Jain's index %.3f, aggregate %.2f Gb/s (min %.2f, max %.2f)", m, n, f.Jain, f.AggGbps, f.MinGbps, f.MaxGbps)
	return f
}

// rxBytes are the bytes each of devs (in B) has received.
func rxBytes(devs []string) ([]uint64, error) {
	out, err := sh(in(nsB, "ip", "-j", "-s", "link", "show")...)
	if err != nil {
		return nil, err
	}
	var links []struct {
		Name  string `json:"ifname"`
		Stats struct {
			RX struct {
				Bytes uint64 `json:"bytes"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, err
	}
	by := map[string]uint64{}
	for _, l := range links {
		by[l.Name] = l.Stats.RX.Bytes
	}
	got := make([]uint64, len(devs))
	for i, d := range devs {
		b, ok := by[d]
		if !ok {
			return nil, fmt.Errorf("no interface %s in %s", d, nsB)
		}
		got[i] = b
	}
	return got, nil
}

// allMoved reports whether every counter grew by a megabyte.
func allMoved(from, to []uint64) bool {
	for i := range from {
		if to[i] < from[i]+1<<20 {
			return false
		}
	}
	return true
}
