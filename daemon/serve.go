package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/l2tpu/l2tpu/tap"
)

// Serve answers requests until ctx is done, then stops: without Keep every
// interface and the state file are removed, as the kernel's state goes with
// its namespace.
func (s *Server) Serve(ctx context.Context) error {
	if s.j != nil {
		os.MkdirAll(s.paths.Dir, 0o700)
		if err := writePIDFile(s.paths.PID); err != nil {
			s.log.Warn("pid file", "err", err)
		}
		defer os.Remove(s.paths.PID)
	}
	notify("READY=1")
	ctx, orphan := context.WithCancel(ctx)
	defer orphan()
	s.mu.Lock()
	s.stopServe = orphan
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.closeControl()
	}()
	go s.watchNamespace(ctx, orphan)
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	go s.checkpoints(bg)
	go s.retries(bg)
	if s.msrv != nil {
		go s.serveMetrics(bg)
	}
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.limit.warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.admit(c)
	}
	s.mu.Lock()
	restarting := s.restarting
	s.mu.Unlock()
	if restarting {
		notify("RELOADING=1") // the same PID says READY=1 again
	} else {
		notify("STOPPING=1")
	}
	s.stopMetrics()
	stopBG()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stop(); err != nil || !restarting {
		return err
	}
	return ErrRestart
}

// stop ends the dataplane. With Keep the journal gets the exact sequence
// numbers and everything stays; otherwise every interface (pending ones
// too) and the journal go.
func (s *Server) stop() error {
	var errs []error
	if s.opt.Keep {
		if err := s.checkpoint(true); err != nil {
			errs = append(errs, err)
		}
	} else {
		for k := range s.pendingS {
			if r, ok := s.j.session(k); ok {
				tap.RemovePersistent(r.Interface)
			}
		}
	}
	if err := s.m.Close(!s.opt.Keep); err != nil {
		errs = append(errs, err)
	}
	if s.keeper != nil {
		if !s.opt.Keep {
			if err := s.keeper.quit(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.restarting && len(errs) == 0 {
			s.keeper.closeRestart()
		} else {
			s.keeper.close()
		}
	}
	if s.j != nil {
		s.j.close()
		if !s.opt.Keep {
			os.Remove(s.j.path)
			os.Remove(s.paths.Options)
		}
		if s.gone && s.j.path == s.paths.State {
			os.Remove(s.paths.Log)
		}
	}
	s.log.Info("stopped", "kept", s.opt.Keep)
	return errors.Join(errs...)
}

// Close stops the server without Serve (tests).
func (s *Server) Close() error {
	s.closeListeners()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop()
}

// every calls fn each period until ctx is done or fn returns false.
func every(ctx context.Context, period time.Duration, fn func() bool) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !fn() {
			return
		}
	}
}

// notify tells systemd (Type=notify) about the daemon's state.
func notify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}
