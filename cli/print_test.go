package cli

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

// lines joins text lines, each ended by "\n".
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// seqStats has each counter a different value, 1 to 10 in Stats' order.
func seqStats() dataplane.Stats {
	return dataplane.Stats{TxPackets: 1, TxBytes: 2, TxErrors: 3, RxPackets: 4, RxBytes: 5,
		RxSeqDiscards: 6, RxOOSPackets: 7, RxErrors: 8, RxCookieDiscards: 9, RxInvalid: 10}
}

func printTestTunnels() []dataplane.TunnelInfo {
	v4, v4p := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	v6, v6p := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	return []dataplane.TunnelInfo{
		{Config: dataplane.TunnelConfig{TunnelID: 1, PeerTunnelID: 2, Encap: encap.EncapUDP, Local: v4, Remote: v4p,
			UDPSourcePort: 1701, UDPDestPort: 1702, UDPCsum: true}, Stats: seqStats()},
		{Config: dataplane.TunnelConfig{TunnelID: 3, PeerTunnelID: 4, Encap: encap.EncapUDP, Local: v6, Remote: v6p,
			UDPSourcePort: 5, UDPDestPort: 6, UDP6ZeroCsumRx: true}},
		{Config: dataplane.TunnelConfig{TunnelID: 5, PeerTunnelID: 6, Encap: encap.EncapIP, Local: v4, Remote: v4p}, Stats: seqStats()},
	}
}

func printTestSessions(t *testing.T) []dataplane.SessionInfo {
	cookie := func(b ...byte) encap.Cookie {
		c, err := encap.NewCookie(b)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return []dataplane.SessionInfo{
		{Config: dataplane.SessionConfig{TunnelID: 1, SessionID: 2, PeerSessionID: 3,
			Cookie: cookie(1, 2, 3, 4, 5, 6, 7, 8), PeerCookie: cookie(0xa, 0xb, 0xc, 0xd), ReorderTimeout: 150 * time.Millisecond},
			PeerTunnelID: 4, Interface: "l2tpeth0", SendSeq: true, RecvSeq: true, Stats: seqStats()},
		{Config: dataplane.SessionConfig{TunnelID: 1, SessionID: 5, PeerSessionID: 6}, PeerTunnelID: 4},
	}
}

const (
	txLine = "  tx_packets 1 tx_bytes 2 tx_errors 3"
	rxLine = "  rx_packets 4 rx_bytes 5 rx_seq_discards 6 rx_oos_packets 7 rx_errors 8 rx_cookie_discards 9 rx_invalid 10"
	zeroTx = "  tx_packets 0 tx_bytes 0 tx_errors 0"
	zeroRx = "  rx_packets 0 rx_bytes 0 rx_seq_discards 0 rx_oos_packets 0 rx_errors 0 rx_cookie_discards 0 rx_invalid 0"
	jStats = `"stats":{"tx_packets":1,"tx_bytes":2,"tx_errors":3,"rx_packets":4,"rx_bytes":5,"rx_seq_discards":6,"rx_oos_packets":7,"rx_errors":8,"rx_cookie_discards":9,"rx_invalid":10}`
	jZero  = `"stats":{"tx_packets":0,"tx_bytes":0,"tx_errors":0,"rx_packets":0,"rx_bytes":0,"rx_seq_discards":0,"rx_oos_packets":0,"rx_errors":0,"rx_cookie_discards":0,"rx_invalid":0}`
)

// TestPrint: every field of a tunnel and a session, each named once in
// print.go, in text, -o, -j and -j -p, with and without -s. The expected
// outputs follow ipl2tp.c's format strings: PRINT_ANY fields in both
// outputs, checksum flags and offsets in one only, print_nl's break "\"
// with -o but the "\n"s it writes itself kept.
func TestPrint(t *testing.T) {
	ts, ss := printTestTunnels(), printTestSessions(t)
	for _, tc := range []struct {
		name     string
		f        Format
		sessions bool
		want     string
	}{
		{"tunnels", Format{}, false, lines(
			"Tunnel 1, encap UDP",
			"  From 192.0.2.1 to 192.0.2.2",
			"  Peer tunnel 2",
			"  UDP source / dest ports: 1701/1702",
			"  UDP checksum: enabled",
			"Tunnel 3, encap UDP",
			"  From 2001:db8::1 to 2001:db8::2",
			"  Peer tunnel 4",
			"  UDP source / dest ports: 5/6",
			"  UDP checksum: tx",
			"Tunnel 5, encap IP",
			"  From 192.0.2.1 to 192.0.2.2",
			"  Peer tunnel 6")},
		{"tunnels -o", Format{Oneline: true}, false, lines(
			`Tunnel 1, encap UDP\  From 192.0.2.1 to 192.0.2.2\  Peer tunnel 2\  UDP source / dest ports: 1701/1702\  UDP checksum: enabled`,
			`Tunnel 3, encap UDP\  From 2001:db8::1 to 2001:db8::2\  Peer tunnel 4\  UDP source / dest ports: 5/6\  UDP checksum: tx`) +
			`Tunnel 5, encap IP\  From 192.0.2.1 to 192.0.2.2\  Peer tunnel 6\`},
		{"tunnels -j", Format{JSON: true}, false, lines(`[` +
			`{"tunnel_id":1,"encap":"UDP","local":"192.0.2.1","peer":"192.0.2.2","peer_tunnel":2,"local_port":1701,"peer_port":1702,"checksum":true},` +
			`{"tunnel_id":3,"encap":"UDP","local":"2001:db8::1","peer":"2001:db8::2","peer_tunnel":4,"local_port":5,"peer_port":6,"checksum_tx":true,"checksum_rx":false},` +
			`{"tunnel_id":5,"encap":"IP","local":"192.0.2.1","peer":"192.0.2.2","peer_tunnel":6}]`)},
		{"tunnels -j -p", Format{JSON: true, Pretty: true}, false, lines(
			`[ {`,
			`        "tunnel_id": 1,`,
			`        "encap": "UDP",`,
			`        "local": "192.0.2.1",`,
			`        "peer": "192.0.2.2",`,
			`        "peer_tunnel": 2,`,
			`        "local_port": 1701,`,
			`        "peer_port": 1702,`,
			`        "checksum": true`,
			`    },{`,
			`        "tunnel_id": 3,`,
			`        "encap": "UDP",`,
			`        "local": "2001:db8::1",`,
			`        "peer": "2001:db8::2",`,
			`        "peer_tunnel": 4,`,
			`        "local_port": 5,`,
			`        "peer_port": 6,`,
			`        "checksum_tx": true,`,
			`        "checksum_rx": false`,
			`    },{`,
			`        "tunnel_id": 5,`,
			`        "encap": "IP",`,
			`        "local": "192.0.2.1",`,
			`        "peer": "192.0.2.2",`,
			`        "peer_tunnel": 6`,
			`    } ]`)},
		{"tunnels -s", Format{Stats: true}, false, lines(
			"Tunnel 1, encap UDP",
			"  From 192.0.2.1 to 192.0.2.2",
			"  Peer tunnel 2",
			"  UDP source / dest ports: 1701/1702",
			"  UDP checksum: enabled",
			txLine, rxLine,
			"Tunnel 3, encap UDP",
			"  From 2001:db8::1 to 2001:db8::2",
			"  Peer tunnel 4",
			"  UDP source / dest ports: 5/6",
			"  UDP checksum: tx",
			zeroTx, zeroRx,
			"Tunnel 5, encap IP",
			"  From 192.0.2.1 to 192.0.2.2",
			"  Peer tunnel 6",
			txLine, rxLine)},
		{"tunnels -s -o", Format{Stats: true, Oneline: true}, false, lines(
			`Tunnel 1, encap UDP\  From 192.0.2.1 to 192.0.2.2\  Peer tunnel 2\  UDP source / dest ports: 1701/1702\  UDP checksum: enabled`,
			txLine+`\`+rxLine+`\Tunnel 3, encap UDP\  From 2001:db8::1 to 2001:db8::2\  Peer tunnel 4\  UDP source / dest ports: 5/6\  UDP checksum: tx`) +
			zeroTx + `\` + zeroRx + `\Tunnel 5, encap IP\  From 192.0.2.1 to 192.0.2.2\  Peer tunnel 6\` + txLine + `\` + rxLine + `\`},
		{"tunnels -s -j", Format{Stats: true, JSON: true}, false, lines(`[` +
			`{"tunnel_id":1,"encap":"UDP","local":"192.0.2.1","peer":"192.0.2.2","peer_tunnel":2,"local_port":1701,"peer_port":1702,"checksum":true,` + jStats + `},` +
			`{"tunnel_id":3,"encap":"UDP","local":"2001:db8::1","peer":"2001:db8::2","peer_tunnel":4,"local_port":5,"peer_port":6,"checksum_tx":true,"checksum_rx":false,` + jZero + `},` +
			`{"tunnel_id":5,"encap":"IP","local":"192.0.2.1","peer":"192.0.2.2","peer_tunnel":6,` + jStats + `}]`)},

		{"sessions", Format{}, true, lines(
			"Session 2 in tunnel 1",
			"  Peer session 3, tunnel 4",
			"  interface name: l2tpeth0",
			"  offset 0, peer offset 0",
			"  cookie 0102030405060708  peer cookie 0a0b0c0d  reorder timeout: 150",
			"  sequence numbering: send recv",
			"Session 5 in tunnel 1",
			"  Peer session 6, tunnel 4",
			"  offset 0, peer offset 0",
			"")},
		{"sessions -o", Format{Oneline: true}, true, lines(
			`Session 2 in tunnel 1\  Peer session 3, tunnel 4\  interface name: l2tpeth0\  offset 0, peer offset 0`,
			`  cookie 0102030405060708  peer cookie 0a0b0c0d  reorder timeout: 150\  sequence numbering: send recv`,
			`Session 5 in tunnel 1\  Peer session 6, tunnel 4\  offset 0, peer offset 0`,
			"")},
		{"sessions -j", Format{JSON: true}, true, lines(`[` +
			`{"session_id":2,"tunnel_id":1,"peer_session_id":3,"peer_tunnel_id":4,"interface":"l2tpeth0","cookie":"0102030405060708","peer_cookie":"0a0b0c0d","reorder_timeout":150,"send_seq":null,"recv_seq":null},` +
			`{"session_id":5,"tunnel_id":1,"peer_session_id":6,"peer_tunnel_id":4}]`)},
		{"sessions -j -p", Format{JSON: true, Pretty: true}, true, lines(
			`[ {`,
			`        "session_id": 2,`,
			`        "tunnel_id": 1,`,
			`        "peer_session_id": 3,`,
			`        "peer_tunnel_id": 4,`,
			`        "interface": "l2tpeth0",`,
			`        "cookie": "0102030405060708",`,
			`        "peer_cookie": "0a0b0c0d",`,
			`        "reorder_timeout": 150,`,
			`        "send_seq": null,`,
			`        "recv_seq": null`,
			`    },{`,
			`        "session_id": 5,`,
			`        "tunnel_id": 1,`,
			`        "peer_session_id": 6,`,
			`        "peer_tunnel_id": 4`,
			`    } ]`)},
		{"sessions -s", Format{Stats: true}, true, lines(
			"Session 2 in tunnel 1",
			"  Peer session 3, tunnel 4",
			"  interface name: l2tpeth0",
			"  offset 0, peer offset 0",
			"  cookie 0102030405060708  peer cookie 0a0b0c0d  reorder timeout: 150",
			"  sequence numbering: send recv",
			txLine, rxLine,
			"Session 5 in tunnel 1",
			"  Peer session 6, tunnel 4",
			"  offset 0, peer offset 0",
			"",
			zeroTx, zeroRx)},
		{"sessions -s -o", Format{Stats: true, Oneline: true}, true, lines(
			`Session 2 in tunnel 1\  Peer session 3, tunnel 4\  interface name: l2tpeth0\  offset 0, peer offset 0`,
			`  cookie 0102030405060708  peer cookie 0a0b0c0d  reorder timeout: 150\  sequence numbering: send recv\`+txLine+`\`+rxLine,
			`Session 5 in tunnel 1\  Peer session 6, tunnel 4\  offset 0, peer offset 0`,
			`\`+zeroTx+`\`+zeroRx)},
		{"sessions -s -j -p", Format{Stats: true, JSON: true, Pretty: true}, true, lines(
			`[ {`,
			`        "session_id": 2,`,
			`        "tunnel_id": 1,`,
			`        "peer_session_id": 3,`,
			`        "peer_tunnel_id": 4,`,
			`        "interface": "l2tpeth0",`,
			`        "cookie": "0102030405060708",`,
			`        "peer_cookie": "0a0b0c0d",`,
			`        "reorder_timeout": 150,`,
			`        "send_seq": null,`,
			`        "recv_seq": null,`,
			`        "stats": {`,
			`            "tx_packets": 1,`,
			`            "tx_bytes": 2,`,
			`            "tx_errors": 3,`,
			`            "rx_packets": 4,`,
			`            "rx_bytes": 5,`,
			`            "rx_seq_discards": 6,`,
			`            "rx_oos_packets": 7,`,
			`            "rx_errors": 8,`,
			`            "rx_cookie_discards": 9,`,
			`            "rx_invalid": 10`,
			`        }`,
			`    },{`,
			`        "session_id": 5,`,
			`        "tunnel_id": 1,`,
			`        "peer_session_id": 6,`,
			`        "peer_tunnel_id": 4,`,
			`        "stats": {`,
			`            "tx_packets": 0,`,
			`            "tx_bytes": 0,`,
			`            "tx_errors": 0,`,
			`            "rx_packets": 0,`,
			`            "rx_bytes": 0,`,
			`            "rx_seq_discards": 0,`,
			`            "rx_oos_packets": 0,`,
			`            "rx_errors": 0,`,
			`            "rx_cookie_discards": 0,`,
			`            "rx_invalid": 0`,
			`        }`,
			`    } ]`)},

		// An empty dump: nothing in text, an empty array in JSON.
		{"no tunnels", Format{}, false, ""},
		{"no sessions -j", Format{JSON: true}, true, "[]\n"},
		{"no sessions -j -p", Format{JSON: true, Pretty: true}, true, "[ ]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			var err error
			switch {
			case strings.HasPrefix(tc.name, "no "):
				if tc.sessions {
					err = PrintSessions(&b, nil, tc.f)
				} else {
					err = PrintTunnels(&b, nil, tc.f)
				}
			case tc.sessions:
				err = PrintSessions(&b, ss, tc.f)
			default:
				err = PrintTunnels(&b, ts, tc.f)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s\n(got %q)", got, tc.want, got)
			}
		})
	}
}

// TestPrinterKinds: a field goes where its kind says, JSON or text, and
// only there.
func TestPrinterKinds(t *testing.T) {
	for _, f := range []Format{{}, {JSON: true}} {
		var b bytes.Buffer
		p := newPrinter(&b, f)
		p.open("")
		p.uint(printAny, "any", " any %d", 1)
		p.uint(printJSON, "json", " json %d", 2)
		p.uint(printFP, "fp", " fp %d", 3)
		p.str(printAny, "s", " s %s", "x")
		p.bool(printAny, "b", " b %s", true)
		p.null(printAny, "n", " n")
		p.literal(" lit")
		p.nl()
		p.close()
		if err := p.done(); err != nil {
			t.Fatal(err)
		}
		want := " any 1 fp 3 s x b true n lit\n"
		if f.JSON {
			want = `[{"any":1,"json":2,"s":"x","b":true,"n":null}]` + "\n"
		}
		if b.String() != want {
			t.Errorf("%+v: %q, want %q", f, b.String(), want)
		}
	}
}
