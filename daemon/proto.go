// Package daemon keeps a namespace's dataplane in a long-running process,
// as the kernel keeps L2TP state in a network namespace. Clients talk to it
// over an abstract unix socket: abstract names are scoped by network
// namespace, so `ip netns exec NS l2tpu ...` reaches the daemon of NS and
// daemons in different namespaces never meet.
package daemon

import (
	"github.com/l2tpu/l2tpu/dataplane"
)

// SocketName is the abstract socket (leading NUL) of a namespace's daemon.
const SocketName = "@l2tpu"

// Operations.
const (
	OpAddTunnel  = "add_tunnel"
	OpAddSession = "add_session"
	OpDelTunnel  = "del_tunnel"
	OpDelSession = "del_session"
	OpList       = "list"
	// OpStop stops the daemon as SIGTERM without -keep does: everything
	// it holds is deleted (l2tpu daemon stop).
	OpStop = "stop"
	// OpRestart makes the daemon stop as with -keep and execute its
	// executable again, same PID and arguments (l2tpu daemon restart: an
	// upgrade); the keeper holds its sockets and queues meanwhile.
	OpRestart = "restart"
	// OpYield makes the daemon stop as with -keep for another to take its
	// place (Options.TakeOver).
	OpYield = "yield"
)

// MaxRequest bounds a request's size: anything larger is refused unread.
const MaxRequest = 64 << 10

// Request is one operation. One request per connection.
type Request struct {
	Op        string                   `json:"op"`
	Tunnel    *dataplane.TunnelConfig  `json:"tunnel,omitempty"`
	Session   *dataplane.SessionConfig `json:"session,omitempty"`
	TunnelID  uint32                   `json:"tunnel_id,omitempty"`
	SessionID uint32                   `json:"session_id,omitempty"`
}

// Response answers a Request. Errno is the kernel's errno for the failure
// (0 on success); Error a sentence for logs and humans.
type Response struct {
	Errno int    `json:"errno,omitempty"`
	Error string `json:"error,omitempty"`
	// Hint is a line the client prints before ip's error text where l2tpu
	// fails for a reason the kernel does not have (CAP_NET_RAW).
	Hint      string                  `json:"hint,omitempty"`
	Interface string                  `json:"interface,omitempty"`
	Tunnels   []dataplane.TunnelInfo  `json:"tunnels,omitempty"`
	Sessions  []dataplane.SessionInfo `json:"sessions,omitempty"`
}
