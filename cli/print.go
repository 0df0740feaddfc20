package cli

import (
	"io"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

// Format selects the output of show.
type Format struct {
	JSON    bool // -j
	Pretty  bool // -p (with -j)
	Oneline bool // -o: print_nl() writes "\" instead of a newline
	Stats   bool // -s: l2tpu's extension, the ten counters
}

// FilterTunnels keeps the tunnels show's tunnel_id asks for (iproute2 sends
// the filter but the kernel ignores it; l2tpu honours it).
func FilterTunnels(ts []dataplane.TunnelInfo, c *Command) []dataplane.TunnelInfo {
	if c.T.TunnelID == 0 {
		return ts
	}
	var out []dataplane.TunnelInfo
	for _, t := range ts {
		if t.Config.TunnelID == c.T.TunnelID {
			out = append(out, t)
		}
	}
	return out
}

// FilterSessions keeps the sessions show's tunnel_id and session_id ask for.
func FilterSessions(ss []dataplane.SessionInfo, c *Command) []dataplane.SessionInfo {
	var out []dataplane.SessionInfo
	for _, s := range ss {
		if (c.T.TunnelID == 0 || s.Config.TunnelID == c.T.TunnelID) &&
			(c.S.SessionID == 0 || s.Config.SessionID == c.S.SessionID) {
			out = append(out, s)
		}
	}
	return out
}

// PrintTunnels is ipl2tp.c's print_tunnel over a dump.
func PrintTunnels(w io.Writer, ts []dataplane.TunnelInfo, f Format) error {
	p := newPrinter(w, f)
	for i := range ts {
		printTunnel(p, &ts[i], f.Stats)
	}
	return p.done()
}

// PrintSessions is ipl2tp.c's print_session over a dump, each session with
// its own cookies (iproute2 repeats the previous session's; see README).
func PrintSessions(w io.Writer, ss []dataplane.SessionInfo, f Format) error {
	p := newPrinter(w, f)
	for i := range ss {
		printSession(p, &ss[i], f.Stats)
	}
	return p.done()
}

// printTunnel names each field once, as print_tunnel does; where ip prints
// a field in JSON only or in text only, so does the call here.
func printTunnel(p *printer, t *dataplane.TunnelInfo, stats bool) {
	c := &t.Config
	p.open("")
	p.uint(printAny, "tunnel_id", "Tunnel %d,", uint64(c.TunnelID))
	p.str(printAny, "encap", " encap %s", encapName(c.Encap))
	p.nl()
	p.str(printAny, "local", "  From %s ", c.Local.String())
	p.str(printAny, "peer", "to %s", c.Remote.String())
	p.nl()
	p.uint(printAny, "peer_tunnel", "  Peer tunnel %d", uint64(c.PeerTunnelID))
	p.nl()
	if c.Encap == encap.EncapUDP {
		p.literal("  UDP source / dest ports:")
		p.uint(printAny, "local_port", " %d", uint64(c.UDPSourcePort))
		p.uint(printAny, "peer_port", "/%d", uint64(c.UDPDestPort))
		p.nl()
		// JSON has the flags, text one word; the text's line ends with
		// "\n" even with -o, as ip's does.
		if c.IPv6() {
			tx, rx := !c.UDP6ZeroCsumTx, !c.UDP6ZeroCsumRx
			p.bool(printJSON, "checksum_tx", "", tx)
			p.bool(printJSON, "checksum_rx", "", rx)
			p.str(printFP, "", "  UDP checksum: %s\n", csum6(tx, rx))
		} else {
			p.bool(printJSON, "checksum", "", c.UDPCsum)
			p.str(printFP, "", "  UDP checksum: %s\n", enabled(c.UDPCsum))
		}
	}
	if stats {
		p.stats(&t.Stats, false)
	}
	p.close()
}

// printSession names each field once, as print_session does.
func printSession(p *printer, s *dataplane.SessionInfo, stats bool) {
	c := &s.Config
	p.open("")
	p.uint(printAny, "session_id", "Session %d", uint64(c.SessionID))
	p.uint(printAny, "tunnel_id", " in tunnel %d", uint64(c.TunnelID))
	p.nl()
	p.uint(printAny, "peer_session_id", "  Peer session %d,", uint64(c.PeerSessionID))
	p.uint(printAny, "peer_tunnel_id", " tunnel %d", uint64(s.PeerTunnelID))
	p.nl()
	if s.Interface != "" {
		p.str(printAny, "interface", "  interface name: %s", s.Interface)
		p.nl()
	}
	// The offsets are in text only (ip keeps them for legacy scripts).
	p.uint(printFP, "offset", "  offset %d,", 0)
	p.uint(printFP, "peer_offset", " peer offset %d\n", 0)
	if !c.Cookie.IsZero() {
		p.str(printAny, "cookie", "  cookie %s", c.Cookie.String())
	}
	if !c.PeerCookie.IsZero() {
		p.str(printAny, "peer_cookie", "  peer cookie %s", c.PeerCookie.String())
	}
	if ms := c.ReorderTimeout.Milliseconds(); ms != 0 {
		p.uint(printAny, "reorder_timeout", "  reorder timeout: %d", uint64(ms))
	}
	if s.SendSeq || s.RecvSeq {
		p.str(printFP, "", "%s  sequence numbering:", p.sl)
		if s.SendSeq {
			p.null(printAny, "send_seq", " send")
		}
		if s.RecvSeq {
			p.null(printAny, "recv_seq", " recv")
		}
	}
	if stats {
		p.stats(&s.Stats, true)
	}
	p.literal("\n")
	p.close()
}

func encapName(e encap.Encap) string {
	switch e {
	case encap.EncapUDP:
		return "UDP"
	case encap.EncapIP:
		return "IP"
	}
	return "??"
}

func enabled(on bool) string {
	if on {
		return "enabled"
	}
	return "disabled"
}

// csum6 is the text of an IPv6 tunnel's checksums, sent (tx) and required
// (rx).
func csum6(tx, rx bool) string {
	switch {
	case tx && rx:
		return "enabled"
	case tx:
		return "tx"
	case rx:
		return "rx"
	}
	return "disabled"
}
