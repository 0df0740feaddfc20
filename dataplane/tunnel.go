package dataplane

import (
	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/encap"
)

// tunnel is one L2TP tunnel: its socket and its sessions.
type tunnel struct {
	cfg      TunnelConfig
	conn     conn.Conn
	sessions atomicMap[uint32, *session] // lock-free lookup
	stats    counters
	// src serves the socket (UDP; IP-encap tunnels receive on the
	// namespace's listener).
	src *source
	// noAddr: the local address is on no interface of the namespace, so
	// the tunnel can neither send nor receive; its sessions' carrier is
	// off. Under the Manager's lock.
	noAddr bool
}

func (t *tunnel) lookup(id uint32) *session {
	return t.sessions.get(id)
}

// serve makes a UDP tunnel's socket a source of the Manager's loops.
func (t *tunnel) serve(m *Manager) (err error) {
	t.src, err = m.sched.add(t.conn.PollFD(), func(tn *turn) result { return m.receiveFrom(tn, t.conn, encap.EncapUDP, t) })
	return err
}
