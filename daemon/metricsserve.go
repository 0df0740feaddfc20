package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/metrics"
)

// The daemon's Manager is what the metrics read.
var _ metrics.Source = (*dataplane.Manager)(nil)

// setupMetrics makes the HTTP server for s.mln; Serve runs it.
func (s *Server) setupMetrics() error {
	reg, err := metrics.NewRegistry(s.m, s.opt.Version)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg, s.log))
	s.msrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      time.Minute,      // ample for 10,000 sessions
		IdleTimeout:       10 * time.Second, // connections are few (metricsConns)
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return nil
}

// metricsConns bounds the connections the metrics server holds: any local
// user can connect, and must not use up the daemon's descriptors.
const metricsConns = 16

// bindMetrics tries to listen on the metrics address; it reports whether
// it does now.
func (s *Server) bindMetrics() bool {
	if s.mln.Load() != nil {
		return true
	}
	ln, err := net.Listen("tcp", s.opt.MetricsAddr)
	if err != nil {
		s.limit.warn("metrics: cannot listen; retried every few seconds. Give -metrics a free host:port (e.g. 127.0.0.1:9115) or stop what holds it",
			"addr", s.opt.MetricsAddr, "err", err)
		return false
	}
	ln = netutil.LimitListener(ln, metricsConns)
	s.mln.Store(&ln)
	addr := ln.Addr().(*net.TCPAddr)
	if !addr.IP.IsLoopback() {
		// Allowed, but not quietly: anyone who reaches the port sees
		// what `ip l2tp show` shows only to CAP_NET_ADMIN.
		s.log.Warn("metrics are served beyond loopback: anyone who reaches this address sees every tunnel's and session's counters; bind to 127.0.0.1 unless a firewall keeps it private",
			"addr", addr.String())
	}
	s.log.Info("serving metrics", "url", "http://"+addr.String()+"/metrics")
	return true
}

// MetricsAddr is the address the metrics are served on (useful with port
// 0), or nil when they are off.
func (s *Server) MetricsAddr() net.Addr {
	if ln := s.mln.Load(); ln != nil {
		return (*ln).Addr()
	}
	return nil
}

// serveMetrics answers scrapes until stopMetrics, binding the address
// first if Listen could not.
func (s *Server) serveMetrics(ctx context.Context) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for !s.bindMetrics() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	if err := s.msrv.Serve(*s.mln.Load()); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("metrics server stopped", "err", err)
	}
}

// stopMetrics lets scrapes under way finish (for a few seconds at most),
// then closes the metrics server.
func (s *Server) stopMetrics() {
	if s.msrv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.msrv.Shutdown(ctx); err != nil {
		s.log.Warn("metrics server: scrapes cut short at stop", "err", err)
		s.msrv.Close()
	}
}
