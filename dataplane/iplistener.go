package dataplane

// The namespace's protocol-115 listeners, one for each family, from which
// every IP tunnel's messages are read: held while an IP tunnel needs them.

import (
	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/encap"
)

// ipListener is one family's listener, shared by its IP tunnels.
type ipListener struct {
	r     conn.Reader
	close func() error
	refs  int
	src   *source // nil while receiving is paused
}

func (l *ipListener) serve(m *Manager) (err error) {
	l.src, err = m.sched.add(l.r.PollFD(), func(t *turn) result { return m.receiveFrom(t, l.r, encap.EncapIP, nil) })
	return err
}

func (m *Manager) holdIPListener(v6 bool) error {
	i := 0
	if v6 {
		i = 1
	}
	if l := m.ipRx[i]; l != nil {
		l.refs++
		return nil
	}
	var (
		r       conn.Reader
		closeFn func() error
		err     error
	)
	kept := m.take(keptListener(v6))
	if kept != nil {
		if r, closeFn, err = conn.AdoptListenIP(kept, v6); err != nil {
			m.log.Warn("cannot adopt the kept IP listener: opening another", "err", err)
			m.drop(keptListener(v6))
			kept = nil
		}
	}
	if kept == nil {
		if r, closeFn, err = m.host.ListenIP(v6); err != nil {
			return err
		}
		m.keep(keptListener(v6), connFile(r))
	}
	l := &ipListener{r: r, close: closeFn, refs: 1}
	if !m.rxPaused {
		if err := l.serve(m); err != nil {
			closeFn()
			return err
		}
	}
	m.ipRx[i] = l
	return nil
}

func (m *Manager) releaseIPListener(v6 bool) {
	i := 0
	if v6 {
		i = 1
	}
	l := m.ipRx[i]
	if l == nil {
		return
	}
	if l.refs--; l.refs == 0 {
		if l.src != nil {
			if err := l.src.remove(); err != nil {
				m.log.Error("IP listener", "err", err)
			}
		}
		l.close()
		m.ipRx[i] = nil
		if !m.closed || m.dropKept {
			m.drop(keptListener(v6))
		}
	}
}
