package encap_test

import (
	"fmt"

	"github.com/l2tpu/l2tpu/encap"
)

// A session as `ip l2tp add session tunnel_id 1000 session_id 1001
// peer_session_id 2002 cookie 0102030405060708 peer_cookie a1a2a3a4 seq both`
// over a UDP tunnel: build the header it sends, and check what it receives.
func Example() {
	cookie, _ := encap.ParseCookie("0102030405060708")
	peerCookie, _ := encap.ParseCookie("a1a2a3a4")
	s := encap.Session{Encap: encap.EncapUDP, SessionID: 1001, PeerSessionID: 2002,
		Cookie: cookie, PeerCookie: peerCookie, L2Spec: encap.L2SpecDefault}
	seq := encap.NewSeq[int](encap.SeqConfig{SendSeq: true, RecvSeq: true})

	// Transmit: the header goes in front of the Ethernet frame.
	tx := encap.NewTxHeader(&s)
	frame := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06}
	seq.NextSublayer() // ns 0 went out earlier
	pkt := tx.Append(nil, seq.NextSublayer(), frame)
	fmt.Printf("sent %x | %x\n", pkt[:tx.Len()], pkt[tx.Len():])
	fmt.Println("MTU on a 1500-byte IPv4 path:", s.DefaultMTU(1500, false))

	// Receive: what the peer (session 2002, cookie a1a2a3a4) sends us.
	in := []byte{0, 3, 0, 0, 0, 0, 0x03, 0xe9, 0xa1, 0xa2, 0xa3, 0xa4, 0x40, 0, 0, 7}
	in = append(in, frame...)
	sid, ver, r := encap.PeekUDP(in)
	fmt.Println("session", sid, r)
	rx := encap.NewRxHeader(&s)
	d, r := rx.Decode(in, ver)
	fmt.Println(r, "seq", d.HasSeq, d.NS, "frame at", d.Offset)
	v, _ := seq.Receive(d, 0, 0)
	fmt.Println(v)

	in[8] ^= 1 // a wrong cookie
	_, r = rx.Decode(in, ver)
	fmt.Println(r)
	// Output:
	// sent 00030000000007d2010203040506070840000001 | ffffffffffff0200000000010806
	// MTU on a 1500-byte IPv4 path: 1438
	// session 1001 ok
	// ok seq true 7 frame at 16
	// deliver
	// cookie-mismatch
}
