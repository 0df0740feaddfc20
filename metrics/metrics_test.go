package metrics

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

type fakeSource struct {
	tunnels  []dataplane.TunnelInfo
	sessions []dataplane.SessionInfo
}

func (f *fakeSource) Tunnels() []dataplane.TunnelInfo   { return f.tunnels }
func (f *fakeSource) Sessions() []dataplane.SessionInfo { return f.sessions }

// seqStats has each counter a different value, base+1 to base+10 in
// dataplane.Stats' order, so a getter that reads the wrong field shows.
func seqStats(base uint64) dataplane.Stats {
	return dataplane.Stats{TxPackets: base + 1, TxBytes: base + 2, TxErrors: base + 3, RxPackets: base + 4,
		RxBytes: base + 5, RxSeqDiscards: base + 6, RxOOSPackets: base + 7, RxErrors: base + 8,
		RxCookieDiscards: base + 9, RxInvalid: base + 10}
}

var statNames = []string{"tx_packets_total", "tx_bytes_total", "tx_errors_total", "rx_packets_total", "rx_bytes_total",
	"rx_seq_discards_total", "rx_oos_packets_total", "rx_errors_total", "rx_cookie_discards_total", "rx_invalid_total"}

func testSource() *fakeSource {
	return &fakeSource{
		tunnels: []dataplane.TunnelInfo{{Config: dataplane.TunnelConfig{TunnelID: 7}, Stats: seqStats(0)}},
		sessions: []dataplane.SessionInfo{
			{Config: dataplane.SessionConfig{TunnelID: 7, SessionID: 1}, Interface: "pw0", Stats: seqStats(100)},
			{Config: dataplane.SessionConfig{TunnelID: 7, SessionID: 2}, Interface: "down0", Stats: seqStats(200)},
			{Config: dataplane.SessionConfig{TunnelID: 7, SessionID: 3}, Interface: "gone0", Stats: seqStats(300)},
			{Config: dataplane.SessionConfig{TunnelID: 7, SessionID: 4}, Interface: "nocarrier0", Stats: seqStats(400)},
		},
	}
}

func testLinks() ([]net.Interface, error) {
	return []net.Interface{
		{Name: "lo", MTU: 65536, Flags: net.FlagUp | net.FlagRunning | net.FlagLoopback},
		{Name: "pw0", MTU: 1400, Flags: net.FlagUp | net.FlagRunning | net.FlagBroadcast},
		{Name: "down0", MTU: 1500, Flags: net.FlagBroadcast},
		{Name: "nocarrier0", MTU: 9000, Flags: net.FlagUp | net.FlagBroadcast},
	}, nil
}

func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func value(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// find returns the metric of family name with exactly these labels.
func find(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, bool) {
	t.Helper()
	for _, m := range fams[name].GetMetric() {
		got := labels(m)
		if len(got) == len(want) && func() bool {
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return true
		}() {
			return m, true
		}
	}
	return nil, false
}

// TestMetricsCollector: names, types, labels, help and values of every
// metric, against a fake Source and fake interfaces.
func TestMetricsCollector(t *testing.T) {
	c := NewCollector(testSource(), "v-test")
	c.links = testLinks
	fams := gather(t, c)

	var want []string
	for _, n := range statNames {
		want = append(want, "l2tpu_tunnel_"+n, "l2tpu_session_"+n)
	}
	want = append(want, "l2tpu_session_up", "l2tpu_session_carrier", "l2tpu_session_mtu_bytes", "l2tpu_tunnel_icmp_errors_total", "l2tpu_build_info")
	var got []string
	for n := range fams {
		got = append(got, n)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("families:\n got %v\nwant %v", got, want)
	}
	for n, mf := range fams {
		if len(mf.GetHelp()) < 20 {
			t.Errorf("%s: help %q says too little", n, mf.GetHelp())
		}
	}

	for i, n := range statNames {
		tf := fams["l2tpu_tunnel_"+n]
		if tf.GetType() != dto.MetricType_COUNTER || len(tf.GetMetric()) != 1 {
			t.Fatalf("%s: %v with %d metrics", tf.GetName(), tf.GetType(), len(tf.GetMetric()))
		}
		if m, ok := find(t, fams, tf.GetName(), map[string]string{"tunnel_id": "7"}); !ok || value(m) != float64(i+1) {
			t.Errorf("%s{tunnel_id=7}: %v (found %v), want %d", tf.GetName(), value(m), ok, i+1)
		}
		sf := fams["l2tpu_session_"+n]
		if sf.GetType() != dto.MetricType_COUNTER || len(sf.GetMetric()) != 4 {
			t.Fatalf("%s: %v with %d metrics", sf.GetName(), sf.GetType(), len(sf.GetMetric()))
		}
		for k, x := range []struct{ sid, ifname string }{{"1", "pw0"}, {"2", "down0"}, {"3", "gone0"}, {"4", "nocarrier0"}} {
			lv := map[string]string{"tunnel_id": "7", "session_id": x.sid, "interface": x.ifname}
			w := float64(100*(k+1) + i + 1)
			if m, ok := find(t, fams, sf.GetName(), lv); !ok || value(m) != w {
				t.Errorf("%s%v: %v (found %v), want %v", sf.GetName(), lv, value(m), ok, w)
			}
		}
	}

	// State gauges: the up interface, the down one, one up without
	// carrier, none for the one that cannot be found.
	for _, g := range []struct {
		name                   string
		pw0, down0, nocarrier0 float64
	}{
		{"l2tpu_session_up", 1, 0, 1},
		{"l2tpu_session_carrier", 1, 0, 0},
		{"l2tpu_session_mtu_bytes", 1400, 1500, 9000},
	} {
		f := fams[g.name]
		if f.GetType() != dto.MetricType_GAUGE || len(f.GetMetric()) != 3 {
			t.Fatalf("%s: %v with %d metrics, want 3 gauges", g.name, f.GetType(), len(f.GetMetric()))
		}
		for _, x := range []struct {
			sid, ifname string
			want        float64
		}{{"1", "pw0", g.pw0}, {"2", "down0", g.down0}, {"4", "nocarrier0", g.nocarrier0}} {
			lv := map[string]string{"tunnel_id": "7", "session_id": x.sid, "interface": x.ifname}
			if m, ok := find(t, fams, g.name, lv); !ok || value(m) != x.want {
				t.Errorf("%s%v: %v (found %v), want %v", g.name, lv, value(m), ok, x.want)
			}
		}
	}

	b := fams["l2tpu_build_info"]
	if len(b.GetMetric()) != 1 || value(b.GetMetric()[0]) != 1 {
		t.Fatalf("build info: %v", b)
	}
	if l := labels(b.GetMetric()[0]); l["version"] != "v-test" || l["goversion"] != runtime.Version() || len(l) != 2 {
		t.Errorf("build info labels %v", l)
	}

	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

// TestMetricsCounterTable: the metrics are dataplane.Counters, in its
// order, each with its help and no help left over for a counter that is
// gone.
func TestMetricsCounterTable(t *testing.T) {
	st := stats()
	if len(st) != len(dataplane.Counters) || len(counterHelp) != len(dataplane.Counters) {
		t.Fatalf("%d metrics, %d help entries, %d counters", len(st), len(counterHelp), len(dataplane.Counters))
	}
	for i, c := range dataplane.Counters {
		if st[i].name != statNames[i] || st[i].name != c.Name+"_total" {
			t.Errorf("metric %d is %s, counter %s, want %s", i, st[i].name, c.Name, statNames[i])
		}
	}
}

// badCollector is a counter named against the conventions.
type badCollector struct{ d *prometheus.Desc }

func (b badCollector) Describe(ch chan<- *prometheus.Desc) { ch <- b.d }
func (b badCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(b.d, prometheus.CounterValue, 1)
}

// TestMetricsLintCanFail is the positive control for TestMetricsCollector's
// lint: a counter without _total is reported.
func TestMetricsLintCanFail(t *testing.T) {
	bad := badCollector{prometheus.NewDesc("l2tpu_bad_packets", "Packets.", nil, nil)}
	if problems, err := testutil.CollectAndLint(bad); err != nil || len(problems) == 0 {
		t.Fatalf("a counter without _total passed the lint: %v", err)
	}
}

// TestMetricsCollectorNoLinks: when the interfaces cannot be read the
// scrape still has every counter; only the state gauges are left out.
func TestMetricsCollectorNoLinks(t *testing.T) {
	c := NewCollector(testSource(), "v")
	c.links = func() ([]net.Interface, error) { return nil, errors.New("netlink: no") }
	if n := testutil.CollectAndCount(c, "l2tpu_session_rx_packets_total"); n != 4 {
		t.Errorf("%d session counters, want 4", n)
	}
	for _, g := range []string{"l2tpu_session_up", "l2tpu_session_carrier", "l2tpu_session_mtu_bytes"} {
		if n := testutil.CollectAndCount(c, g); n != 0 {
			t.Errorf("%s: %d without interfaces", g, n)
		}
	}
	// The positive control: with the interfaces the gauges are there.
	c.links = testLinks
	if n := testutil.CollectAndCount(c, "l2tpu_session_up"); n != 3 {
		t.Errorf("l2tpu_session_up: %d with interfaces, want 3", n)
	}
}

// TestMetricsCollectorEmpty: nothing configured is just the build info,
// and no interface dump.
func TestMetricsCollectorEmpty(t *testing.T) {
	c := NewCollector(&fakeSource{}, "v")
	c.links = func() ([]net.Interface, error) { t.Error("interfaces read without sessions"); return nil, nil }
	if n := testutil.CollectAndCount(c); n != 1 {
		t.Errorf("%d metrics, want 1 (build info)", n)
	}
}

// scrape is what the handler serves for src over HTTP: 200, in the text
// format.
func scrape(t *testing.T, src Source) []byte {
	t.Helper()
	reg, err := NewRegistry(src, "v-test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(reg, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("%s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return body
}

// TestMetricsHandler: over HTTP, the handler serves the collector and the
// Go and process collectors in the text format.
func TestMetricsHandler(t *testing.T) {
	body := scrape(t, testSource())
	for _, w := range []string{
		`l2tpu_build_info{goversion="` + runtime.Version() + `",version="v-test"} 1`,
		`l2tpu_session_rx_packets_total{interface="pw0",session_id="1",tunnel_id="7"} 104`,
		"\ngo_goroutines ", "\nprocess_cpu_seconds_total ", "\nprocess_resident_memory_bytes ",
	} {
		if !strings.Contains(string(body), w) {
			t.Errorf("no %q in\n%s", w, body)
		}
	}
}

// TestMetricsNonUTF8Interface: an interface name that is not UTF-8 (root
// may rename a TAP so) is escaped in its label, and neither its session's
// series nor any other's go missing from the scrape, which promtool
// accepts. (Issue 18, finding 9.)
func TestMetricsNonUTF8Interface(t *testing.T) {
	privtest.RequireCommand(t, "promtool", "prometheus")
	src := &fakeSource{sessions: []dataplane.SessionInfo{
		{Config: dataplane.SessionConfig{TunnelID: 7, SessionID: 1}, Interface: "pw\xff\xfe0", Stats: seqStats(100)},
		{Config: dataplane.SessionConfig{TunnelID: 7, SessionID: 2}, Interface: "pw1", Stats: seqStats(200)},
	}}
	body := scrape(t, src)
	for _, w := range []string{
		`l2tpu_session_rx_packets_total{interface="pw\\xff\\xfe0",session_id="1",tunnel_id="7"} 104`,
		`l2tpu_session_rx_packets_total{interface="pw1",session_id="2",tunnel_id="7"} 204`,
	} {
		if !strings.Contains(string(body), w) {
			t.Errorf("no %q in\n%s", w, body)
		}
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	// promtool's lint exits 3 for lint problems only (the Go collectors'
	// help texts pass); a parse error is 1.
	if code := cmd.ProcessState.ExitCode(); code != 0 && code != 3 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// countingSource counts the collections that walk its sessions.
type countingSource struct {
	fakeSource
	walks atomic.Int32
}

func (c *countingSource) Sessions() []dataplane.SessionInfo {
	c.walks.Add(1)
	return c.fakeSource.Sessions()
}

// TestMetricsScrapesBounded: however many scrapes come (any local user
// may send them), the sessions are walked at most once per interval, and
// every scrape is still answered in full (scrapes in a row; the handler
// also refuses more than a few at once). The control: with no interval,
// each scrape walks them. (Issue 18, finding 9.)
func TestMetricsScrapesBounded(t *testing.T) {
	for _, c := range []struct {
		every time.Duration
		walks func(n int32) bool
	}{
		{time.Hour, func(n int32) bool { return n == 1 }},
		{0, func(n int32) bool { return n == 40 }},
	} {
		src := &countingSource{fakeSource: *testSource()}
		reg, err := NewRegistry(src, "v-test")
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(handlerEvery(reg, c.every, slog.New(slog.DiscardHandler)))
		for range 40 {
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), `l2tpu_session_rx_packets_total{interface="pw0",session_id="1",tunnel_id="7"} 104`) {
				t.Fatalf("every %v: %s\n%s", c.every, resp.Status, body)
			}
		}
		srv.Close()
		if n := src.walks.Load(); !c.walks(n) {
			t.Errorf("every %v: 40 scrapes walked the sessions %d times", c.every, n)
		}
	}
}
