package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

type iperfJSON struct {
	End struct {
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		Sum struct {
			Packets     float64 `json:"packets"`
			LostPackets float64 `json:"lost_packets"`
			Seconds     float64 `json:"seconds"`
		} `json:"sum"`
	} `json:"end"`
}

// iperf runs an iperf3 client against a one-off server in B.
func iperf(target string, args ...string) (iperfJSON, error) {
	var j iperfJSON
	srv := start(in(nsB, "iperf3", "-s", "-1", "-B", target)...)
	defer stop(srv)
	time.Sleep(300 * time.Millisecond)
	o, err := sh(append(in(nsA, "iperf3", "-c", target, "-J"), args...)...)
	if err != nil {
		return j, err
	}
	return j, json.Unmarshal([]byte(o), &j)
}

// iperfUDP is the 64-byte UDP rate received, in kpps.
func iperfUDP(target string) (float64, error) {
	j, err := iperf(target, "-t", strconv.Itoa(*secs), "-u", "-l", "64", "-b", "0")
	if err != nil {
		return 0, err
	}
	if j.End.Sum.Seconds == 0 {
		return 0, fmt.Errorf("no UDP result")
	}
	return (j.End.Sum.Packets - j.End.Sum.LostPackets) / j.End.Sum.Seconds / 1000, nil
}

// tcpUnderLoad runs one TCP stream and, alongside it, pings (RTT under
// load) and CPU accounting: the whole machine's and the method's own
// processes', per GB received.
func tcpUnderLoad(l link, r *Result) error {
	n := max(*secs-1, 1) * 100 // every 10 ms, ending before the stream
	pc := make(chan pinged, 1)
	go func() {
		time.Sleep(500 * time.Millisecond) // past slow start
		st, err := ping(l.target, n, 10*time.Millisecond)
		pc <- pinged{st, err}
	}()
	m0, o0 := machineCPU(), processCPU(l.pids())
	j, err := iperf(l.target, "-t", strconv.Itoa(*secs))
	m1, o1 := machineCPU(), processCPU(l.pids())
	p := <-pc
	if err != nil {
		return err
	}
	r.TCPGbps = j.End.SumReceived.BitsPerSecond / 1e9
	if gb := j.End.SumReceived.Bytes / 1e9; gb > 0 {
		r.CPUsPerGB = (m1 - m0) / gb
		r.OwnCPUsPerGB = (o1 - o0) / gb
	}
	if p.err != nil {
		return p.err
	}
	r.LoadRTTp50us, r.LoadRTTp99us = p.st.p50, p.st.p99
	return nil
}

type rttStats struct{ mean, p50, p99, lossPct float64 }

var pingTime = regexp.MustCompile(`time=([\d.]+) ms`)

// ping sends n pings, interval apart, from A to target; replies that do
// not come count as the longest time seen (p99 then shows them).
func ping(target string, n int, interval time.Duration) (rttStats, error) {
	o, _ := sh(in(nsA, "ping", "-n", "-c", strconv.Itoa(n), "-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "1", target)...)
	return pingStats(o)
}

var pingSent = regexp.MustCompile(`(\d+) packets transmitted`)

// pingStats reads ping's output: each reply's time, and how many were sent.
func pingStats(o string) (rttStats, error) {
	var us []float64
	for _, m := range pingTime.FindAllStringSubmatch(o, -1) {
		ms, _ := strconv.ParseFloat(m[1], 64)
		us = append(us, ms*1000)
	}
	n := len(us)
	if m := pingSent.FindStringSubmatch(o); m != nil {
		n, _ = strconv.Atoi(m[1])
	}
	if n == 0 || len(us) < n/2 {
		return rttStats{}, fmt.Errorf("ping: %d of %d replies", len(us), n)
	}
	slices.Sort(us)
	lost := n - len(us)
	for len(us) < n {
		us = append(us, us[len(us)-1])
	}
	var sum float64
	for _, v := range us {
		sum += v
	}
	return rttStats{sum / float64(n), quantile(us, 0.5), quantile(us, 0.99), 100 * float64(max(lost, 0)) / float64(n)}, nil
}

// quantile of sorted values (nearest rank).
func quantile(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// userHZ is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

// machineCPU is the CPU seconds every core has spent busy since boot
// (user, nice, system, irq, softirq, steal: all but idle and iowait).
func machineCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal
	var t float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		if i < len(f) {
			v, _ := strconv.ParseFloat(f[i], 64)
			t += v
		}
	}
	return t / userHZ
}

// processCPU is the CPU seconds (user and system) the processes have used.
func processCPU(pids []int) float64 {
	var t float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// After "(comm)": state is field 3; utime and stime are 14 and 15.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			k, _ := strconv.ParseFloat(f[12], 64)
			t += (u + k) / userHZ
		}
	}
	return t
}
