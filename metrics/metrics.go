// Package metrics exposes a dataplane's tunnels and sessions to Prometheus:
// a Collector that reads their counters, and the state of their
// interfaces, at scrape time, and an HTTP handler over a registry of its
// own (never the global default one).
package metrics

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/l2tpu/l2tpu/dataplane"
)

// Source is what the Collector reads: a *dataplane.Manager.
type Source interface {
	Tunnels() []dataplane.TunnelInfo
	Sessions() []dataplane.SessionInfo
}

// stat is one of the kernel's ten counters.
type stat struct {
	name         string // Prometheus name after l2tpu_tunnel_ / l2tpu_session_
	tunnel, sess string // help texts
	get          func(*dataplane.Stats) uint64
}

// counterHelp is each counter's help, the tunnel's and the session's, by
// its name in dataplane.Counters. Where the tunnel's counter is never
// incremented (the kernel counts those drops on the session only) its help
// says so, so that a flat 0 is not read as "no drops".
var counterHelp = func() map[string]struct{ tunnel, sess string } {
	const sessionOnly = " Counted on the session only (as the kernel does): always 0 on the tunnel."
	return map[string]struct{ tunnel, sess string }{
		"tx_packets": {"Data packets the tunnel's sessions sent.", "Data packets the session sent."},
		"tx_bytes": {"Bytes the tunnel's sessions sent: L2TP header (for UDP, from the flags word on) and Ethernet frame.",
			"Bytes the session sent: L2TP header (for UDP, from the flags word on) and Ethernet frame."},
		"tx_errors": {"Data packets of the tunnel's sessions that the socket refused to send.",
			"Data packets of the session that the socket refused to send."},
		"rx_packets": {"Data packets the tunnel's sessions received and delivered to their interfaces.",
			"Data packets the session received and delivered to its interface."},
		"rx_bytes": {"Bytes of the data packets the tunnel's sessions delivered: L2TP header and Ethernet frame.",
			"Bytes of the data packets the session delivered: L2TP header and Ethernet frame."},
		"rx_seq_discards": {"Received packets dropped by the sequence rules." + sessionOnly,
			"Received packets dropped by the sequence rules: unsequenced while sequencing is required, or out of sequence."},
		"rx_oos_packets": {"Received packets that arrived out of sequence." + sessionOnly,
			"Received packets that arrived out of sequence (overtook a packet held for reordering)."},
		"rx_errors": {"Received packets dropped with an error." + sessionOnly,
			"Received packets dropped with an error: wrong cookie, sequence drops, reorder buffer purges."},
		"rx_cookie_discards": {"Received packets dropped for a cookie other than peer_cookie." + sessionOnly,
			"Received packets dropped for a cookie other than the session's peer_cookie."},
		"rx_invalid": {"Received packets for a known session with an L2TP version other than 3, or too short for the session's cookie and sublayer.",
			"Always 0 on the session: invalid packets are counted on their tunnel (l2tpu_tunnel_rx_invalid_total), as the kernel does."},
	}
}()

// stats are the counters of dataplane.Counters, in its order, named
// <counter>_total.
func stats() []stat {
	out := make([]stat, 0, len(dataplane.Counters))
	for _, c := range dataplane.Counters {
		h, ok := counterHelp[c.Name]
		if !ok {
			panic("metrics: no help for counter " + c.Name)
		}
		out = append(out, stat{c.Name + "_total", h.tunnel, h.sess, c.Get})
	}
	return out
}

// Collector is a prometheus.Collector over a Source: every scrape takes a
// fresh snapshot, so nothing is kept between scrapes and removed tunnels
// and sessions simply disappear.
type Collector struct {
	src     Source
	version string
	// links reads the interfaces (net.Interfaces; tests replace it). One
	// dump per scrape: net.InterfaceByName dumps every link on each call,
	// which with thousands of sessions would make a scrape quadratic.
	links func() ([]net.Interface, error)

	stats            []stat
	tunnel, session  []*prometheus.Desc // by stats' order
	up, carrier, mtu *prometheus.Desc
	icmpErrors       *prometheus.Desc
	build            *prometheus.Desc
}

// NewCollector returns a Collector of src's tunnels and sessions; version
// is the daemon's, for l2tpu_build_info.
func NewCollector(src Source, version string) *Collector {
	c := &Collector{src: src, version: version, links: net.Interfaces, stats: stats()}
	tl := []string{"tunnel_id"}
	sl := []string{"tunnel_id", "session_id", "interface"}
	for _, s := range c.stats {
		c.tunnel = append(c.tunnel, prometheus.NewDesc("l2tpu_tunnel_"+s.name, s.tunnel, tl, nil))
		c.session = append(c.session, prometheus.NewDesc("l2tpu_session_"+s.name, s.sess, sl, nil))
	}
	c.up = prometheus.NewDesc("l2tpu_session_up",
		"1 if the session's interface is administratively up (IFF_UP), else 0. Absent when the interface cannot be found.", sl, nil)
	c.carrier = prometheus.NewDesc("l2tpu_session_carrier",
		"1 if the session's interface has carrier (IFF_RUNNING: up, its TAP held by the daemon, and its tunnel's local address present), else 0. Absent when the interface cannot be found.", sl, nil)
	c.mtu = prometheus.NewDesc("l2tpu_session_mtu_bytes",
		"The current MTU of the session's interface. Absent when the interface cannot be found.", sl, nil)
	c.icmpErrors = prometheus.NewDesc("l2tpu_tunnel_icmp_errors_total",
		"Errors that ICMP messages (port or host unreachable, forged or not) left on the tunnel's socket: each was consumed by a read or a send, which was then made again, so no frame was lost (the kernel's tunnels ignore them too).", tl, nil)
	c.build = prometheus.NewDesc("l2tpu_build_info",
		"Always 1; the labels say which l2tpu runs and the Go release it was built with.", []string{"version", "goversion"}, nil)
	return c
}

// Describe sends every descriptor the Collector can produce.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for i := range c.stats {
		ch <- c.tunnel[i]
		ch <- c.session[i]
	}
	ch <- c.up
	ch <- c.carrier
	ch <- c.mtu
	ch <- c.icmpErrors
	ch <- c.build
}

// Collect snapshots the Source and the interfaces.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.build, prometheus.GaugeValue, 1, c.version, runtime.Version())
	for _, t := range c.src.Tunnels() {
		id := strconv.FormatUint(uint64(t.Config.TunnelID), 10)
		for i, s := range c.stats {
			ch <- prometheus.MustNewConstMetric(c.tunnel[i], prometheus.CounterValue, float64(s.get(&t.Stats)), id)
		}
		ch <- prometheus.MustNewConstMetric(c.icmpErrors, prometheus.CounterValue, float64(t.ICMPErrors), id)
	}
	sessions := c.src.Sessions()
	if len(sessions) == 0 {
		return
	}
	// A failed dump leaves out the state gauges, not the counters: a
	// scrape never fails for it.
	byName := map[string]net.Interface{}
	if ifs, err := c.links(); err == nil {
		for _, ifi := range ifs {
			byName[ifi.Name] = ifi
		}
	}
	for _, x := range sessions {
		lv := []string{strconv.FormatUint(uint64(x.Config.TunnelID), 10),
			strconv.FormatUint(uint64(x.Config.SessionID), 10), labelValue(x.Interface)}
		for i, s := range c.stats {
			ch <- prometheus.MustNewConstMetric(c.session[i], prometheus.CounterValue, float64(s.get(&x.Stats)), lv...)
		}
		ifi, ok := byName[x.Interface]
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, flag(ifi.Flags&net.FlagUp != 0), lv...)
		ch <- prometheus.MustNewConstMetric(c.carrier, prometheus.GaugeValue, flag(ifi.Flags&net.FlagRunning != 0), lv...)
		ch <- prometheus.MustNewConstMetric(c.mtu, prometheus.GaugeValue, float64(ifi.MTU), lv...)
	}
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// NewRegistry returns a registry of its own holding src's Collector and
// the Go runtime and process collectors.
func NewRegistry(src Source, version string) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		NewCollector(src, version),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// Handler serves reg in the Prometheus exposition formats. Collection
// errors are logged and what could be collected is still served.
//
// Every local user can reach the port, and a collection walks every tunnel
// and session under the dataplane's lock: collections are at least
// MinInterval apart, scrapes in between getting the last one's figures, so
// that no rate of scrapes can make the dataplane wait more than that allows.
func Handler(reg prometheus.Gatherer, log *slog.Logger) http.Handler {
	return handlerEvery(reg, MinInterval, log)
}

func handlerEvery(reg prometheus.Gatherer, every time.Duration, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(&cachedGatherer{g: reg, every: every}, promhttp.HandlerOpts{
		ErrorLog:      errorLog{log},
		ErrorHandling: promhttp.ContinueOnError,
		// A scrape walks every session: a few at once are plenty, more
		// would only compete with the data path for CPU.
		MaxRequestsInFlight: 4,
	})
}

// MinInterval is the least time between two collections (Handler).
const MinInterval = time.Second

// cachedGatherer gathers at most once each every; concurrent scrapes wait
// for the one collection under way.
type cachedGatherer struct {
	g     prometheus.Gatherer
	every time.Duration
	mu    sync.Mutex
	at    time.Time
	mfs   []*dto.MetricFamily
	err   error
}

func (c *cachedGatherer) Gather() ([]*dto.MetricFamily, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= c.every || c.every <= 0 {
		c.mfs, c.err = c.g.Gather()
		c.at = time.Now()
	}
	return c.mfs, c.err
}

// errorLog is promhttp.Logger on slog.
type errorLog struct{ log *slog.Logger }

func (e errorLog) Println(v ...any) { e.log.Warn("metrics", "err", fmt.Sprint(v...)) }

// labelValue is name as a label value, which must be UTF-8: a Linux
// interface name is any bytes (root may rename a TAP so), and a metric with
// an invalid label would be dropped from the scrape with every one after
// it. Bytes that are not UTF-8 are written \xNN.
func labelValue(name string) string {
	if utf8.ValidString(name) {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); {
		r, n := utf8.DecodeRuneInString(name[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, "\\x%02x", name[i])
		} else {
			b.WriteString(name[i : i+n])
		}
		i += n
	}
	return b.String()
}
