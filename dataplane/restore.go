package dataplane

// Restoring what an earlier process recorded: tunnels, sessions re-attached
// to their interfaces or the queues a keeper held, and receiving paused
// until the restore is done.

import (
	"errors"
	"fmt"

	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/tap"
)

// RestoreTunnel re-creates a tunnel recorded by an earlier process: as
// AddTunnel, without recording it again.
func (m *Manager) RestoreTunnel(c TunnelConfig) error { return m.addTunnel(c, false) }

// PauseReceive holds back the reading of tunnel sockets until
// ResumeReceive: a daemon restoring its state adopts sockets with frames
// waiting in them, which must wait until their sessions are restored too.
func (m *Manager) PauseReceive() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rxPaused = true
}

// ResumeReceive serves the sockets PauseReceive held back.
func (m *Manager) ResumeReceive() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.rxPaused || m.closed {
		return nil
	}
	m.rxPaused = false
	var errs []error
	for _, t := range m.tunnels {
		if t.cfg.Encap == encap.EncapUDP && t.src == nil {
			errs = append(errs, t.serve(m))
		}
	}
	for _, l := range m.ipRx {
		if l != nil && l.src == nil {
			errs = append(errs, l.serve(m))
		}
	}
	return errors.Join(errs...)
}

// stopReceiving stops serving every tunnel socket and IP listener (their
// batches under way finish first).
func (m *Manager) stopReceiving() {
	for _, t := range m.tunnels {
		if t.src != nil {
			if err := t.src.remove(); err != nil {
				m.log.Error("tunnel socket", "tunnel_id", t.cfg.TunnelID, "err", err)
			}
			t.src = nil
		}
	}
	for _, l := range m.ipRx {
		if l != nil && l.src != nil {
			if err := l.src.remove(); err != nil {
				m.log.Error("IP listener", "err", err)
			}
			l.src = nil
		}
	}
}

// Restore is what an earlier process recorded of a session.
type Restore struct {
	// Interface was the session's interface, Index its index. If it is
	// still there (a persistent TAP, see Options.PersistTAP: of
	// Options.Owner, no queue attached) the session re-attaches to it and
	// leaves its MTU, addresses and bridge membership alone; found by
	// Index when it was renamed meanwhile.
	Interface string
	Index     int
	// Recreate creates the interface anew when it is gone, as after a
	// reboot. Without it (the interface was deleted behind the earlier
	// process's back, as the kernel deletes the session with it) the
	// restore fails with ErrInterfaceGone.
	Recreate bool
	// NextNS is the sequence number to send next. The peer drops numbers
	// behind the one it expects (the kernel's window rule) but resyncs
	// to numbers ahead after a few packets, so a session restored after a
	// crash should resume ahead of the last number it is known to have
	// sent.
	NextNS uint32
}

// RestoreSession re-creates a session recorded by an earlier process.
func (m *Manager) RestoreSession(c SessionConfig, r Restore) (string, error) {
	return m.addSession(c, &r)
}

// adoptQueues takes the queues a keeper held of the interface with index
// ifindex, or nil: where there are none, or they do not fit this Manager's
// configuration (then the keeper lets go of them, and the restore attaches
// to the interface as after a crash without a keeper).
func (m *Manager) adoptQueues(ifindex int) []tap.Device {
	if ifindex <= 0 {
		return nil
	}
	var qs []tap.Device
	var err error
	taken := 0
	for q := 0; q < tap.MaxQueues; q++ {
		f := m.take(keptQueue(ifindex, q))
		if f == nil {
			break
		}
		taken++
		if err != nil {
			f.Close()
			continue
		}
		var d tap.Device
		if d, err = tap.Adopt(f, m.tapConfig("", true)); err == nil {
			qs = append(qs, d)
		}
	}
	if err == nil && len(qs) > 0 {
		if idx, ierr := qs[0].Index(); ierr != nil || idx != ifindex {
			err = fmt.Errorf("the kept queue is of interface %d, not %d", idx, ifindex)
		}
	}
	if err == nil {
		return qs
	}
	m.log.Warn("cannot adopt the kept queues: attaching again", "ifindex", ifindex, "err", err)
	for _, d := range qs {
		d.Close()
	}
	for q := range taken {
		m.drop(keptQueue(ifindex, q))
	}
	return nil
}

// restoreTarget finds the interface a restored session attaches to: the
// recorded one, under its name or (renamed) its index, if it is a TAP of
// the Manager's owner with no queue attached; or the name to create it
// under (Recreate).
func (m *Manager) restoreTarget(r *Restore) (name string, index int, attach bool, err error) {
	check := func(idx int) error {
		info, err := m.host.Links.Info(idx)
		switch {
		case err != nil || !info.Tap || (m.opt.Owner != nil && info.Owner != m.opt.Owner.UID && info.Owner != -1):
			return ErrInterfaceGone // another device has the name now
		case info.Queues > 0 && m.byIndex.get(idx) != nil:
			return ErrInterfaceGone // one of this Manager's sessions has it now
		case info.Queues > 0:
			return ErrInterfaceBusy
		}
		return nil
	}
	if idx, err := m.host.Links.Index(r.Interface); err == nil {
		if err := check(idx); err != nil && !(r.Recreate && errors.Is(err, ErrInterfaceGone)) {
			return "", 0, false, err
		} else if err == nil {
			return r.Interface, idx, true, nil
		}
		return "", 0, false, ErrInterfaceBusy // a reboot's restore: the name is another's
	}
	if r.Index > 0 && !r.Recreate {
		if info, err := m.host.Links.Info(r.Index); err == nil && check(r.Index) == nil {
			return info.Name, r.Index, true, nil // renamed while no process held it
		}
	}
	if !r.Recreate {
		return "", 0, false, ErrInterfaceGone
	}
	return r.Interface, 0, false, nil
}
