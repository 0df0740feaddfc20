package cli

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
             -force | -b[atch] FILE | -V[ersion] | -v | -h[elp] }
`

// Usage is the text printed (to stderr) for help and usage errors.
func Usage() string { return usageText }
