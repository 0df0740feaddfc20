package cli

import (
	"fmt"
	"io"
	"strings"

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

func (f Format) nl() string {
	if f.Oneline {
		return `\`
	}
	return "\n"
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
	if f.JSON {
		j := &jsonw{w: w, pretty: f.Pretty}
		j.startArray()
		for _, t := range ts {
			c := t.Config
			j.startObject()
			j.kvUint("tunnel_id", uint64(c.TunnelID))
			j.kvStr("encap", encapName(c.Encap))
			j.kvStr("local", c.Local.String())
			j.kvStr("peer", c.Remote.String())
			j.kvUint("peer_tunnel", uint64(c.PeerTunnelID))
			if c.Encap == encap.EncapUDP {
				j.kvUint("local_port", uint64(c.UDPSourcePort))
				j.kvUint("peer_port", uint64(c.UDPDestPort))
				if c.IPv6() {
					j.kvBool("checksum_tx", !c.UDP6ZeroCsumTx)
					j.kvBool("checksum_rx", !c.UDP6ZeroCsumRx)
				} else {
					j.kvBool("checksum", c.UDPCsum)
				}
			}
			if f.Stats {
				jsonStats(j, t.Stats)
			}
			j.endObject()
		}
		j.endArray()
		return j.flush()
	}
	var b strings.Builder
	nl := f.nl()
	for _, t := range ts {
		c := t.Config
		fmt.Fprintf(&b, "Tunnel %d, encap %s%s", c.TunnelID, encapName(c.Encap), nl)
		fmt.Fprintf(&b, "  From %s to %s%s", c.Local, c.Remote, nl)
		fmt.Fprintf(&b, "  Peer tunnel %d%s", c.PeerTunnelID, nl)
		if c.Encap == encap.EncapUDP {
			fmt.Fprintf(&b, "  UDP source / dest ports: %d/%d%s", c.UDPSourcePort, c.UDPDestPort, nl)
			if c.IPv6() {
				tx, rx := !c.UDP6ZeroCsumTx, !c.UDP6ZeroCsumRx
				v := "disabled"
				switch {
				case tx && rx:
					v = "enabled"
				case tx:
					v = "tx"
				case rx:
					v = "rx"
				}
				fmt.Fprintf(&b, "  UDP checksum: %s\n", v)
			} else {
				fmt.Fprintf(&b, "  UDP checksum: %s\n", map[bool]string{true: "enabled", false: "disabled"}[c.UDPCsum])
			}
		}
		if f.Stats {
			textStats(&b, t.Stats, "", nl)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// PrintSessions is ipl2tp.c's print_session over a dump, each session with
// its own cookies (iproute2 repeats the previous session's; see README).
func PrintSessions(w io.Writer, ss []dataplane.SessionInfo, f Format) error {
	if f.JSON {
		j := &jsonw{w: w, pretty: f.Pretty}
		j.startArray()
		for _, s := range ss {
			c := s.Config
			j.startObject()
			j.kvUint("session_id", uint64(c.SessionID))
			j.kvUint("tunnel_id", uint64(c.TunnelID))
			j.kvUint("peer_session_id", uint64(c.PeerSessionID))
			j.kvUint("peer_tunnel_id", uint64(s.PeerTunnelID))
			if s.Interface != "" {
				j.kvStr("interface", s.Interface)
			}
			if !c.Cookie.IsZero() {
				j.kvStr("cookie", c.Cookie.String())
			}
			if !c.PeerCookie.IsZero() {
				j.kvStr("peer_cookie", c.PeerCookie.String())
			}
			if ms := c.ReorderTimeout.Milliseconds(); ms != 0 {
				j.kvUint("reorder_timeout", uint64(ms))
			}
			if s.SendSeq {
				j.kvNull("send_seq")
			}
			if s.RecvSeq {
				j.kvNull("recv_seq")
			}
			if f.Stats {
				jsonStats(j, s.Stats)
			}
			j.endObject()
		}
		j.endArray()
		return j.flush()
	}
	var b strings.Builder
	nl := f.nl()
	for _, s := range ss {
		c := s.Config
		fmt.Fprintf(&b, "Session %d in tunnel %d%s", c.SessionID, c.TunnelID, nl)
		fmt.Fprintf(&b, "  Peer session %d, tunnel %d%s", c.PeerSessionID, s.PeerTunnelID, nl)
		if s.Interface != "" {
			fmt.Fprintf(&b, "  interface name: %s%s", s.Interface, nl)
		}
		b.WriteString("  offset 0, peer offset 0\n")
		if !c.Cookie.IsZero() {
			fmt.Fprintf(&b, "  cookie %s", c.Cookie)
		}
		if !c.PeerCookie.IsZero() {
			fmt.Fprintf(&b, "  peer cookie %s", c.PeerCookie)
		}
		if ms := c.ReorderTimeout.Milliseconds(); ms != 0 {
			fmt.Fprintf(&b, "  reorder timeout: %d", ms)
		}
		if s.SendSeq || s.RecvSeq {
			fmt.Fprintf(&b, "%s  sequence numbering:", nl)
			if s.SendSeq {
				b.WriteString(" send")
			}
			if s.RecvSeq {
				b.WriteString(" recv")
			}
		}
		if f.Stats {
			textStats(&b, s.Stats, nl, "")
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
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

// textStats prints the counters on two lines, each preceded by pre and
// followed by post (the line breaks of the block it extends).
func textStats(b *strings.Builder, s dataplane.Stats, pre, post string) {
	fmt.Fprintf(b, "%s  tx_packets %d tx_bytes %d tx_errors %d%s", pre, s.TxPackets, s.TxBytes, s.TxErrors, post)
	fmt.Fprintf(b, "%s  rx_packets %d rx_bytes %d rx_errors %d rx_seq_discards %d rx_oos_packets %d rx_cookie_discards %d rx_invalid %d%s",
		pre, s.RxPackets, s.RxBytes, s.RxErrors, s.RxSeqDiscards, s.RxOOSPackets, s.RxCookieDiscards, s.RxInvalid, post)
}

func jsonStats(j *jsonw, s dataplane.Stats) {
	j.name("stats")
	j.startObject()
	for _, kv := range []struct {
		k string
		v uint64
	}{{"tx_packets", s.TxPackets}, {"tx_bytes", s.TxBytes}, {"tx_errors", s.TxErrors},
		{"rx_packets", s.RxPackets}, {"rx_bytes", s.RxBytes}, {"rx_seq_discards", s.RxSeqDiscards},
		{"rx_oos_packets", s.RxOOSPackets}, {"rx_errors", s.RxErrors},
		{"rx_cookie_discards", s.RxCookieDiscards}, {"rx_invalid", s.RxInvalid}} {
		j.kvUint(kv.k, kv.v)
	}
	j.endObject()
}
