package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	dto "github.com/prometheus/client_model/go"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// childEnv makes the test binary a daemon (see TestMain): a Server must
// run in its own process, entered into its namespace as a whole, because
// the dataplane creates sockets and TAPs from whichever thread it is on.
const childEnv = "L2TPU_TEST_DAEMON"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(testDaemon())
	}
	os.Exit(m.Run())
}

// testDaemon is `l2tpu daemon -metrics $L2TPU_TEST_METRICS` with the state
// journal at $L2TPU_TEST_STATE; it prints the metrics address on stdout
// once listening, and stops (removing what it made) on SIGTERM.
func testDaemon() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := Listen(Options{StatePath: os.Getenv("L2TPU_TEST_STATE"), MetricsAddr: os.Getenv("L2TPU_TEST_METRICS"),
		Version: "metrics-test", Logger: log})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	fmt.Printf("metrics %v\n", s.MetricsAddr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := s.Serve(ctx); err != nil {
		log.Error("stop", "err", err)
		return 1
	}
	return 0
}

// testDaemonProc is a daemon this test started.
type testDaemonProc struct {
	cmd     *exec.Cmd
	addr    string // metrics host:port
	log     string // its stderr
	stopped bool
}

// startTestDaemon runs a daemon in ns with -metrics metricsAddr. It waits
// until the daemon listens, or has exited (then addr is "").
func startTestDaemon(t *testing.T, ns *privtest.NS, metricsAddr string) *testDaemonProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := &testDaemonProc{log: filepath.Join(dir, "log")}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// argv[1] "daemon", as `l2tpu daemon`: Stop recognises it.
	d.cmd = exec.Command("ip", "netns", "exec", ns.Name, exe, "daemon")
	d.cmd.Env = append(os.Environ(), childEnv+"=1", "L2TPU_TEST_METRICS="+metricsAddr,
		"L2TPU_TEST_STATE="+filepath.Join(dir, "state"))
	d.cmd.Stderr = logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // if the test binary dies
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(d.log)
			t.Logf("daemon in %s with metrics at %q:\n%s", ns.Name, metricsAddr, b)
		}
		// The PID file under RunDir, should a daemon not have removed it.
		if p, err := PathsAt(ns.Path()); err == nil {
			p.removeRuntime()
		}
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- l
		io.Copy(io.Discard, out)
	}()
	select {
	case l := <-line:
		d.addr = strings.TrimPrefix(strings.TrimSpace(l), "metrics ")
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon neither listened nor exited within 20 s")
	}
	return d
}

// stop ends the daemon (SIGTERM, by its PID) and returns its exit status.
func (d *testDaemonProc) stop(t *testing.T) int {
	t.Helper()
	if d.stopped {
		return d.cmd.ProcessState.ExitCode()
	}
	d.stopped = true
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-done
		t.Error("the daemon did not stop within 20 s of SIGTERM: killed")
	}
	return d.cmd.ProcessState.ExitCode()
}

func callIn(t *testing.T, ns *privtest.NS, req Request) Response {
	t.Helper()
	var r Response
	if err := netns.Do(ns.Path(), func() (err error) { r, err = Call(req); return err }); err != nil {
		t.Fatalf("%s in %s: %v", req.Op, ns.Name, err)
	}
	if r.Errno != 0 {
		t.Fatalf("%s in %s: %s (errno %d)", req.Op, ns.Name, r.Error, r.Errno)
	}
	return r
}

// scrape GETs /metrics from addr inside ns (the daemon's loopback is its
// namespace's).
func scrape(t *testing.T, ns *privtest.NS, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			var c net.Conn
			err := netns.Do(ns.Path(), func() (err error) { c, err = (&net.Dialer{}).DialContext(ctx, network, a); return err })
			return c, err
		},
	}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s %v\n%s", resp.Status, err, b)
	}
	return string(b)
}

func parseMetrics(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("scraped text does not parse: %v\n%s", err, text)
	}
	return fams
}

// sample returns the value of family name's metric with exactly these
// labels.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		ok := true
		for _, l := range m.GetLabel() {
			if want[l.GetName()] != l.GetValue() {
				ok = false
			}
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// promtool runs `promtool check metrics` on text: its exit status and
// everything it printed.
func promtool(t *testing.T, text string) (int, string) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// statsOf is the ten counters by their metric names.
func statsOf(s dataplane.Stats) map[string]uint64 {
	return map[string]uint64{
		"tx_packets_total": s.TxPackets, "tx_bytes_total": s.TxBytes, "tx_errors_total": s.TxErrors,
		"rx_packets_total": s.RxPackets, "rx_bytes_total": s.RxBytes, "rx_seq_discards_total": s.RxSeqDiscards,
		"rx_oos_packets_total": s.RxOOSPackets, "rx_errors_total": s.RxErrors,
		"rx_cookie_discards_total": s.RxCookieDiscards, "rx_invalid_total": s.RxInvalid,
	}
}

// ifMTU reads an interface's MTU with ip, not Go's net package, as the
// collector does.
func ifMTU(t *testing.T, ns *privtest.NS, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(` mtu (\d+) `).FindStringSubmatch(ns.Run(t, "ip", "-o", "link", "show", "dev", name))
	if m == nil {
		t.Fatalf("no MTU for %s", name)
	}
	v, _ := strconv.Atoi(m[1])
	return float64(v)
}

// TestMetricsEndToEnd: two namespaces, a daemon in each serving metrics; a
// pseudowire between them carries pings; /metrics, scraped over HTTP in
// the namespace, has the counters the daemon reports over its control
// socket, labelled, the interfaces' state, build info, Go and process
// metrics, and passes promtool's lint. A taken metrics address fails the
// start, saying which; SIGTERM stops the daemon cleanly.
func TestMetricsEndToEnd(t *testing.T) {
	privtest.Require(t)
	privtest.RequireCommand(t, "promtool", "prometheus")

	// The lint's positive control: promtool rejects a counter named
	// against the conventions, so a clean result below means something.
	if code, out := promtool(t, "# HELP l2tpu_bad_packets Packets.\n# TYPE l2tpu_bad_packets counter\nl2tpu_bad_packets 1\n"); code == 0 || !strings.Contains(out, "_total") {
		t.Fatalf("promtool accepted a counter without _total: status %d, %q", code, out)
	}

	p := privtest.Prefix()
	a, b := privtest.NewNS(t, p+"a"), privtest.NewNS(t, p+"b")
	for _, ns := range []*privtest.NS{a, b} {
		// No IPv6: no router solicitations or DAD to move the counters
		// between the reads compared below.
		ns.Run(t, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	privtest.Veth(t, a, p+"va", b, p+"vb")
	a.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", p+"va")
	b.Run(t, "ip", "addr", "add", "192.0.2.2/24", "dev", p+"vb")

	// A taken address (any local user can take one) does not keep the
	// daemon from starting: it says which address and what to do, runs,
	// and serves the metrics once the address is free.
	var hold net.Listener
	if err := netns.Do(b.Path(), func() (err error) { hold, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	taken := hold.Addr().String()
	da := startTestDaemon(t, a, "127.0.0.1:0")
	db := startTestDaemon(t, b, taken)
	if db.addr != "<nil>" {
		t.Fatalf("metrics on %q while %s is held", db.addr, taken)
	}
	if db.cmd.ProcessState != nil {
		t.Fatal("the daemon exited over a taken metrics address")
	}
	if log, _ := os.ReadFile(db.log); !strings.Contains(string(log), "metrics: cannot listen") ||
		!strings.Contains(string(log), taken) || !strings.Contains(string(log), "Give -metrics a free host:port") {
		t.Fatalf("the log does not say which address failed and what to do:\n%s", log)
	}
	hold.Close()
	privtest.Eventually(t, 10*time.Second, func() error {
		return netns.Do(b.Path(), func() error {
			c, err := net.Dial("tcp", taken)
			if err == nil {
				c.Close()
			}
			return err
		})
	})
	db.addr = taken
	if da.addr == "" {
		t.Fatalf("metrics address %q", da.addr)
	}
	if !strings.HasPrefix(da.addr, "127.0.0.1:") || strings.HasSuffix(da.addr, ":0") {
		t.Fatalf("MetricsAddr %q: want the port :0 picked", da.addr)
	}

	tun := func(id, peer uint32, local, remote string, sport, dport uint16) *dataplane.TunnelConfig {
		return &dataplane.TunnelConfig{TunnelID: id, PeerTunnelID: peer, Encap: encap.EncapUDP,
			Local: mustAddr(local), Remote: mustAddr(remote), UDPSourcePort: sport, UDPDestPort: dport}
	}
	sess := func(tid, sid, psid uint32, name string) *dataplane.SessionConfig {
		return &dataplane.SessionConfig{TunnelID: tid, SessionID: sid, PeerSessionID: psid, Name: name, L2Spec: encap.L2SpecDefault}
	}
	callIn(t, a, Request{Op: OpAddTunnel, Tunnel: tun(3000, 4000, "192.0.2.1", "192.0.2.2", 5000, 6000)})
	callIn(t, a, Request{Op: OpAddSession, Session: sess(3000, 1000, 2000, "pwa")})
	// A second session whose interface stays down.
	callIn(t, a, Request{Op: OpAddSession, Session: sess(3000, 1001, 2001, "pwdown")})
	callIn(t, b, Request{Op: OpAddTunnel, Tunnel: tun(4000, 3000, "192.0.2.2", "192.0.2.1", 6000, 5000)})
	callIn(t, b, Request{Op: OpAddSession, Session: sess(4000, 2000, 1000, "pwb")})
	a.Run(t, "ip", "link", "set", "pwa", "mtu", "1400")
	a.Run(t, "ip", "addr", "add", "203.0.113.1/24", "dev", "pwa")
	a.Run(t, "ip", "link", "set", "pwa", "up")
	b.Run(t, "ip", "addr", "add", "203.0.113.2/24", "dev", "pwb")
	b.Run(t, "ip", "link", "set", "pwb", "up")
	out, _ := a.Try("ping", "-n", "-q", "-c", "5", "-i", "0.2", "-W", "2", "203.0.113.2")
	if !strings.Contains(out, " 5 received") && !strings.Contains(out, " 4 received") {
		t.Fatalf("pings through the pseudowire:\n%s", out)
	}
	// Three frames a sends and nothing answers (b's stack drops them: not
	// its MAC), so that a's transmit and receive counters differ and a
	// metric reading the wrong one shows.
	a.Run(t, "ip", "neigh", "add", "203.0.113.9", "lladdr", "02:00:00:00:00:09", "dev", "pwa")
	a.Try("ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "203.0.113.9")

	for _, c := range []struct {
		ns    *privtest.NS
		d     *testDaemonProc
		tid   string
		state map[string][3]float64 // interface: up, carrier, MTU
	}{
		{a, da, "3000", map[string][3]float64{"pwa": {1, 1, 1400}, "pwdown": {0, 0, ifMTU(t, a, "pwdown")}}},
		{b, db, "4000", map[string][3]float64{"pwb": {1, 1, ifMTU(t, b, "pwb")}}},
	} {
		// The counters may move (an ARP refresh) between the list and
		// the scrape: compare a scrape taken between two equal lists.
		var (
			text string
			list Response
		)
		stable := false
		for i := 0; i < 50 && !stable; i++ {
			before := callIn(t, c.ns, Request{Op: OpList})
			text = scrape(t, c.ns, c.d.addr)
			list = callIn(t, c.ns, Request{Op: OpList})
			stable = fmt.Sprint(before.Tunnels, before.Sessions) == fmt.Sprint(list.Tunnels, list.Sessions)
			if !stable {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if !stable {
			t.Fatalf("%s: counters never stood still for a scrape", c.ns.Name)
		}
		fams := parseMetrics(t, text)

		if len(list.Tunnels) != 1 || len(list.Sessions) != len(c.state) {
			t.Fatalf("%s: %d tunnels, %d sessions", c.ns.Name, len(list.Tunnels), len(list.Sessions))
		}
		tl := map[string]string{"tunnel_id": c.tid}
		for name, want := range statsOf(list.Tunnels[0].Stats) {
			if v, ok := sample(fams, "l2tpu_tunnel_"+name, tl); !ok || v != float64(want) {
				t.Errorf("%s: l2tpu_tunnel_%s%v = %v (present %v), the daemon says %d", c.ns.Name, name, tl, v, ok, want)
			}
		}
		if n := len(fams["l2tpu_tunnel_rx_packets_total"].GetMetric()); n != 1 {
			t.Errorf("%s: %d tunnels in the metrics", c.ns.Name, n)
		}
		for _, s := range list.Sessions {
			lv := map[string]string{"tunnel_id": c.tid, "session_id": strconv.FormatUint(uint64(s.Config.SessionID), 10), "interface": s.Interface}
			for name, want := range statsOf(s.Stats) {
				if v, ok := sample(fams, "l2tpu_session_"+name, lv); !ok || v != float64(want) {
					t.Errorf("%s: l2tpu_session_%s%v = %v (present %v), the daemon says %d", c.ns.Name, name, lv, v, ok, want)
				}
			}
			st, known := c.state[s.Interface]
			if !known {
				t.Fatalf("%s: unexpected session interface %q", c.ns.Name, s.Interface)
			}
			if st[0] == 1 && (s.Stats.TxPackets == 0 || s.Stats.RxPackets == 0 || s.Stats.TxBytes == 0 || s.Stats.RxBytes == 0) {
				t.Errorf("%s: %s carried the pings but its counters are %+v", c.ns.Name, s.Interface, s.Stats)
			}
			if s.Interface == "pwa" && s.Stats.TxPackets < s.Stats.RxPackets+3 {
				t.Errorf("pwa sent 3 frames more than it received, but its counters are %+v", s.Stats)
			}
			for i, g := range []string{"l2tpu_session_up", "l2tpu_session_carrier", "l2tpu_session_mtu_bytes"} {
				if v, ok := sample(fams, g, lv); !ok || v != st[i] {
					t.Errorf("%s: %s%v = %v (present %v), want %v", c.ns.Name, g, lv, v, ok, st[i])
				}
			}
		}
		if n := len(fams["l2tpu_session_rx_packets_total"].GetMetric()); n != len(c.state) {
			t.Errorf("%s: %d sessions in the metrics, want %d", c.ns.Name, n, len(c.state))
		}
		if v, ok := sample(fams, "l2tpu_build_info", map[string]string{"version": "metrics-test", "goversion": runtime.Version()}); !ok || v != 1 {
			t.Errorf("%s: no l2tpu_build_info{version=metrics-test,goversion=%s} 1", c.ns.Name, runtime.Version())
		}
		for _, f := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_cpu_seconds_total", "process_open_fds"} {
			if len(fams[f].GetMetric()) == 0 {
				t.Errorf("%s: no %s", c.ns.Name, f)
			}
		}
		if code, out := promtool(t, text); code != 0 || out != "" {
			t.Errorf("%s: promtool check metrics: status %d:\n%s", c.ns.Name, code, out)
		}
	}

	// A clean stop: status 0, the metrics port closed with it.
	if code := da.stop(t); code != 0 {
		t.Fatalf("daemon in a: status %d after SIGTERM", code)
	}
	err := netns.Do(a.Path(), func() error {
		c, err := net.DialTimeout("tcp", da.addr, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Error("the metrics port still answers after the daemon stopped")
	}
}
