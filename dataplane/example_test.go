package dataplane_test

import (
	"fmt"
	"log"
	"net/netip"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

// One end of a UDP pseudowire, as
//
//	ip l2tp add tunnel tunnel_id 100 peer_tunnel_id 200 encap udp \
//	    local 192.0.2.1 remote 192.0.2.2 udp_sport 1701 udp_dport 1702
//	ip l2tp add session tunnel_id 100 session_id 1001 peer_session_id 2002 \
//	    cookie 0102030405060708 peer_cookie a1a2a3a4 seq both
//
// It needs root (a TAP device) and 192.0.2.1 on a local interface with a
// route to 192.0.2.2; TestExample runs it in a network namespace.
func Example() {
	m, err := dataplane.New(dataplane.Options{}) // this network namespace
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(true)

	err = m.AddTunnel(dataplane.TunnelConfig{
		TunnelID: 100, PeerTunnelID: 200, Encap: encap.EncapUDP,
		Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("192.0.2.2"),
		UDPSourcePort: 1701, UDPDestPort: 1702,
	})
	if err != nil {
		log.Fatal(err)
	}
	cookie, _ := encap.ParseCookie("0102030405060708")
	peerCookie, _ := encap.ParseCookie("a1a2a3a4")
	ifname, err := m.AddSession(dataplane.SessionConfig{
		TunnelID: 100, SessionID: 1001, PeerSessionID: 2002,
		Cookie: cookie, PeerCookie: peerCookie, L2Spec: encap.L2SpecDefault,
		SendSeq: true, RecvSeq: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range m.Sessions() {
		fmt.Println(ifname, "mtu", s.MTU, "send_seq", s.SendSeq, "rx_packets", s.Stats.RxPackets)
	}
	// Frames the host sends on l2tpeth0 now go to 192.0.2.2:1702 as L2TPv3.
}
