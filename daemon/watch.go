package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// watcher signals address and link changes in the namespace: a pending
// restore whose address or interface was missing may now succeed.
type watcher struct{ f *os.File }

func newWatcher() (*watcher, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("address watcher: %w", err)
	}
	groups := uint32(unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("address watcher: %w", err)
	}
	return &watcher{f: os.NewFile(uintptr(fd), "rtnetlink-addr")}, nil
}

// run signals on (without blocking) after each batch of messages read, and
// after an overrun, until close.
func (w *watcher) run(on chan<- struct{}) {
	buf := make([]byte, 16<<10)
	for {
		_, err := w.f.Read(buf)
		if err != nil && err != unix.ENOBUFS && !isENOBUFS(err) {
			return
		}
		select {
		case on <- struct{}{}:
		default:
		}
	}
}

func isENOBUFS(err error) bool {
	pe, ok := err.(*os.PathError)
	return ok && pe.Err == unix.ENOBUFS
}

func (w *watcher) close() { w.f.Close() }

// logLimiter bounds the log lines that other users can cause (refused and
// malformed requests, connections over the limit): at most logBurst in each
// logWindow, then one line saying how many were suppressed.
type logLimiter struct {
	log        *slog.Logger
	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed int
}

const (
	logBurst  = 20
	logWindow = time.Minute
)

func newLogLimiter(l *slog.Logger) *logLimiter { return &logLimiter{log: l} }

func (l *logLimiter) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.start) >= logWindow {
		if l.suppressed > 0 {
			l.log.Warn("log lines suppressed", "count", l.suppressed, "window", logWindow)
		}
		l.start, l.n, l.suppressed = now, 0, 0
	}
	if l.n >= logBurst {
		l.suppressed++
		return false
	}
	l.n++
	return true
}

func (l *logLimiter) warn(msg string, args ...any) {
	if l.allow() {
		l.log.Warn(msg, args...)
	}
}

func (l *logLimiter) error(msg string, args ...any) {
	if l.allow() {
		l.log.Error(msg, args...)
	}
}
