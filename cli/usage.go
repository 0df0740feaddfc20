package cli

import "strings"

// usageText is ipl2tp.c's usage with the command named l2tpu and l2tpu's
// extensions added (reorder_timeout, the daemon, -s counters).
const usageText = `Usage: l2tpu add tunnel
          remote ADDR local ADDR
          tunnel_id ID peer_tunnel_id ID
          [ encap { ip | udp } ]
          [ udp_sport PORT ] [ udp_dport PORT ]
          [ udp_csum { on | off } ]
          [ udp6_csum_tx { on | off } ]
          [ udp6_csum_rx { on | off } ]
Usage: l2tpu add session [ name NAME ]
          tunnel_id ID
          session_id ID peer_session_id ID
          [ cookie HEXSTR ] [ peer_cookie HEXSTR ]
          [ seq { none | send | recv | both } ]
          [ l2spec_type L2SPEC ]
          [ reorder_timeout MS ]
       l2tpu del tunnel tunnel_id ID
       l2tpu del session tunnel_id ID session_id ID
       l2tpu show tunnel [ tunnel_id ID ]
       l2tpu show session [ tunnel_id ID ] [ session_id ID ]
       l2tpu daemon [ -v ] [ --keep ] [ --group GROUP ] [ --state FILE ]

Where: NAME   := STRING
       ADDR   := { IP_ADDRESS | any }
       PORT   := { 0..65535 }
       ID     := { 1..4294967295 }
       HEXSTR := { 8 or 16 hex digits (4 / 8 bytes) }
       L2SPEC := { none | default }
       MS     := { 0..4294967295 } milliseconds
OPTIONS := { -j[son] | -p[retty] | -s[tatistics] | -o[neline] |
             -force | -b[atch] FILE | -n[etns] NETNS | -V[ersion] |
             -v | -h[elp] }
`

// Prog is the command's name in messages: "l2tpu", or "ip l2tp" when the
// binary serves as ip (the shim), whose texts are then ip's own.
const Prog = "l2tpu"

// IPProg is Prog for the ip shim.
const IPProg = "ip l2tp"

// Usage is the text printed (to stderr) for help and usage errors by prog:
// l2tpu's, or for the ip shim ipl2tp.c's (no daemon line, no options: ip
// prints its own), keeping l2tpu's extensions.
func Usage(prog string) string {
	if prog == Prog {
		return usageText
	}
	var b strings.Builder
	opts := false
	for _, line := range strings.SplitAfter(usageText, "\n") {
		if strings.Contains(line, "l2tpu daemon") {
			continue
		}
		if strings.HasPrefix(line, "OPTIONS") {
			opts = true
		}
		if !opts {
			b.WriteString(strings.ReplaceAll(line, Prog+" ", prog+" "))
		}
	}
	return b.String()
}
