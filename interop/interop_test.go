package interop

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/encap/layer"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// side is one end's session parameters.
type side struct {
	sid, psid          uint32
	cookie, peerCookie string // hex, "" for none
	seq                string // none, send, recv, both
}

// kcase is one interop case: the kernel in the VM against l2tpu.
type kcase struct {
	name   string
	encap  encap.Encap
	v6     bool
	l2spec encap.L2Spec
	k, u   side
	// expect: "pass" (traffic both ways, counters equal), "blackhole"
	// (everything dropped and counted by the receiver, the kernel's own
	// outcome for that configuration), or a check of its own.
	expect string
	check  func(c *caseRun) string
	// exact: l2tpu's daemon runs with -no-gso, the byte-exact path (UDP
	// checksum 0 over IPv4 where udp_csum is off, as the kernel sends).
	exact bool
}

// cookiePair returns distinct cookies per direction: c0c1.. sent by the
// kernel, d0d1.. by l2tpu.
func cookiePair(n int) (string, string) {
	if n == 0 {
		return "", ""
	}
	var k, u strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&k, "%02x", 0xc0+i)
		fmt.Fprintf(&u, "%02x", 0xd0+i)
	}
	return k.String(), u.String()
}

func matrix() []kcase {
	var cs []kcase
	for _, e := range []encap.Encap{encap.EncapUDP, encap.EncapIP} {
		for _, v6 := range []bool{false, true} {
			for _, ck := range []int{0, 4, 8} {
				for _, l2 := range []encap.L2Spec{encap.L2SpecNone, encap.L2SpecDefault} {
					for _, seq := range []string{"none", "send", "recv", "both"} {
						kc, uc := cookiePair(ck)
						fam := "v4"
						if v6 {
							fam = "v6"
						}
						c := kcase{name: fmt.Sprintf("%s-%s-c%d-l2%s-seq%s", e, fam, ck, l2, seq), encap: e, v6: v6, l2spec: l2,
							k:      side{cookie: kc, peerCookie: uc, seq: seq},
							u:      side{cookie: uc, peerCookie: kc, seq: seq},
							expect: "pass"}
						// seq recv on both ends: nobody sends sequence numbers, both
						// drop everything; seq both without a sublayer cannot carry
						// them. The kernel's own outcome, on both sides.
						if seq == "recv" || (seq == "both" && l2 == encap.L2SpecNone) {
							c.expect = "blackhole"
						}
						cs = append(cs, c)
					}
				}
			}
		}
	}
	return cs
}

// exactCases run UDP cases again with l2tpu's byte-exact path (-no-gso):
// checksum 0 over IPv4 like the kernel's; over IPv6 the same bytes as with
// GSO, sent without it.
func exactCases() []kcase {
	var cs []kcase
	for _, v6 := range []bool{false, true} {
		for _, ck := range []int{0, 4, 8} {
			for _, seq := range []string{"none", "both"} {
				kc, uc := cookiePair(ck)
				fam := "v4"
				if v6 {
					fam = "v6"
				}
				cs = append(cs, kcase{name: fmt.Sprintf("exact-udp-%s-c%d-l2default-seq%s", fam, ck, seq), encap: encap.EncapUDP, v6: v6,
					l2spec: encap.L2SpecDefault, k: side{cookie: kc, peerCookie: uc, seq: seq}, u: side{cookie: uc, peerCookie: kc, seq: seq},
					expect: "pass", exact: true})
			}
		}
	}
	return cs
}

// caseRun is a case being run and its observations.
type caseRun struct {
	kcase
	i            int
	pingTo       int // host → guest replies of 3
	pingFrom     int
	tcpTo        bool
	tcpFrom      bool
	dU           dataplane.Stats
	dK           kstats
	kSendSeq     bool
	pcap         string
	kAddr, uAddr netip.Addr
	kPort, uPort uint16
	wire, tshark string
	kS           int // kernel packets with the S bit
}

// Fixed inner frame injected on both ends: compared on the wire.
var probe = func() []byte {
	f := make([]byte, 60)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x99, 0x88, 0xb5})
	copy(f[14:], "l2tpu interop wire probe")
	return f
}()

func seqWords(seq string) string {
	if seq == "" {
		return "none"
	}
	return seq
}

func (tp *topo) runKernel(t *testing.T, c kcase, i int) *caseRun {
	r := &caseRun{kcase: c, i: i}
	kt, ut := uint32(1000+i), uint32(3000+i)
	r.kPort, r.uPort = uint16(10000+i), uint16(20000+i)
	if c.k.sid == 0 {
		r.k.sid, r.k.psid = 0x1a2b0000+uint32(i), 0x5e6f0000+uint32(i)
		r.u.sid, r.u.psid = r.k.psid, r.k.sid
	}
	r.kAddr, r.uAddr = netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1")
	if c.v6 {
		r.kAddr, r.uAddr = netip.MustParseAddr("2001:db8:a::2"), netip.MustParseAddr("2001:db8:a::1")
	}
	encapWord := c.encap.String()
	ports := func(s, d uint16) string {
		if c.encap == encap.EncapUDP {
			return fmt.Sprintf(" udp_sport %d udp_dport %d", s, d)
		}
		return ""
	}
	cookies := func(s side) string {
		out := ""
		if s.cookie != "" {
			out += " cookie " + s.cookie
		}
		if s.peerCookie != "" {
			out += " peer_cookie " + s.peerCookie
		}
		return out
	}
	// Kernel side: the previous case's tunnel goes first (the kernel tears
	// it down asynchronously: wait for its interface to go).
	script := fmt.Sprintf(`ip l2tp del tunnel tunnel_id %d 2>/dev/null
for n in $(seq 100); do [ -e /sys/class/net/kpw%d ] || break; sleep 0.05; done
ip l2tp add tunnel tunnel_id %d peer_tunnel_id %d encap %s local %s remote %s%s
ip l2tp add session name kpw%d tunnel_id %d session_id %d peer_session_id %d%s l2spec_type %s seq %s
echo 1 > /proc/sys/net/ipv6/conf/kpw%d/disable_ipv6
ip link set kpw%d address 02:6b:70:00:00:01 up
ip addr add 203.0.113.1/24 dev kpw%d`,
		kt-1, i-1, kt, ut, encapWord, r.kAddr, r.uAddr, ports(r.kPort, r.uPort),
		i, kt, r.k.sid, r.k.psid, cookies(r.k), c.l2spec, seqWords(r.k.seq), i, i, i)
	if out, err := tp.vm.Run(script); err != nil {
		t.Fatalf("%s: kernel setup: %v\n%s", c.name, err, out)
	}
	tp.l2tpu("del", "tunnel", "tunnel_id", strconv.Itoa(int(ut-1)))
	cmds := [][]string{
		strings.Fields(fmt.Sprintf("add tunnel tunnel_id %d peer_tunnel_id %d encap %s local %s remote %s%s", ut, kt, encapWord, r.uAddr, r.kAddr, ports(r.uPort, r.kPort))),
		strings.Fields(fmt.Sprintf("add session name pw0 tunnel_id %d session_id %d peer_session_id %d%s l2spec_type %s seq %s", ut, r.u.sid, r.u.psid, cookies(r.u), c.l2spec, seqWords(r.u.seq))),
	}
	for _, cmd := range cmds {
		if out, err := tp.l2tpu(cmd...); err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, out)
		}
	}
	tp.u.Run(t, "sysctl", "-qw", "net.ipv6.conf.pw0.disable_ipv6=1")
	tp.u.Run(t, "ip", "addr", "add", "203.0.113.2/24", "dev", "pw0")
	tp.u.Run(t, "ip", "link", "set", "pw0", "up")

	capt := tp.startCapture(t, c.name, tp.tap)
	if err := tp.injectHost("pw0", probe); err != nil {
		t.Fatal(err)
	}
	if err := tp.vm.Inject(fmt.Sprintf("kpw%d", i), probe); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	u0, _, err := tp.sessionStats()
	if err != nil {
		t.Fatal(err)
	}
	k0, err := tp.kernelStats()
	if err != nil {
		t.Fatal(err)
	}
	n := 3
	if c.expect == "blackhole" {
		n = 2
	}
	r.pingTo = tp.pingFromHost("203.0.113.1", n)
	r.pingFrom = tp.pingFromGuest("203.0.113.2", n)
	if c.expect == "pass" {
		r.tcpTo = tp.tcpToGuest("203.0.113.1:5001", 65536)
		r.tcpFrom = tp.tcpFromGuest("203.0.113.2:5002", 65536)
	}
	time.Sleep(500 * time.Millisecond)
	u1, _, err := tp.sessionStats()
	if err != nil {
		t.Fatal(err)
	}
	k1, err := tp.kernelStats()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tp.vm.Run("ip l2tp show session"); err == nil {
		r.kSendSeq = strings.Contains(out, "sequence numbering: send")
	}
	r.pcap = capt.stop()
	r.dU = statsDelta(u1, u0)
	for j := range r.dK {
		r.dK[j] = k1[j] - k0[j]
	}
	r.wire = r.checkWire()
	r.tshark = r.checkTshark()
	return r
}

func statsDelta(a, b dataplane.Stats) dataplane.Stats {
	return dataplane.Stats{TxPackets: a.TxPackets - b.TxPackets, TxBytes: a.TxBytes - b.TxBytes, TxErrors: a.TxErrors - b.TxErrors,
		RxPackets: a.RxPackets - b.RxPackets, RxBytes: a.RxBytes - b.RxBytes, RxSeqDiscards: a.RxSeqDiscards - b.RxSeqDiscards,
		RxOOSPackets: a.RxOOSPackets - b.RxOOSPackets, RxErrors: a.RxErrors - b.RxErrors,
		RxCookieDiscards: a.RxCookieDiscards - b.RxCookieDiscards, RxInvalid: a.RxInvalid - b.RxInvalid}
}

// counters compares what each end sent with what the other received.
func (r *caseRun) counters() string {
	u, k := r.dU, r.dK
	switch r.expect {
	case "pass":
		if u.TxPackets == 0 || k[0] == 0 {
			return "no traffic"
		}
		if u.TxPackets != k[3] || u.TxBytes != k[4] || k[0] != u.RxPackets || k[1] != u.RxBytes {
			return fmt.Sprintf("l2tpu tx %d/%d kernel rx %d/%d; kernel tx %d/%d l2tpu rx %d/%d", u.TxPackets, u.TxBytes, k[3], k[4], k[0], k[1], u.RxPackets, u.RxBytes)
		}
		if u.RxErrors != 0 || k[5] != 0 || u.TxErrors != 0 || k[2] != 0 {
			return fmt.Sprintf("errors: l2tpu %+v kernel %v", u, k)
		}
		return fmt.Sprintf("ok: →%d pkts %d B, ←%d pkts %d B, equal at both ends", u.TxPackets, u.TxBytes, k[0], k[1])
	case "blackhole":
		if k[3] != 0 || u.RxPackets != 0 {
			return fmt.Sprintf("delivered: kernel rx %d, l2tpu rx %d", k[3], u.RxPackets)
		}
		if k[5] != u.TxPackets || u.RxErrors != k[0] || u.RxSeqDiscards != k[0] || k[0] == 0 || u.TxPackets == 0 {
			return fmt.Sprintf("l2tpu tx %d = kernel rx errors %d? kernel tx %d = l2tpu rx_seq_discards %d / rx_errors %d?", u.TxPackets, k[5], k[0], u.RxSeqDiscards, u.RxErrors)
		}
		return fmt.Sprintf("dropped+counted: %d and %d", k[5], u.RxSeqDiscards)
	}
	return r.check(r)
}

func (r *caseRun) verdict() bool {
	if r.wire != "ok" || !strings.HasPrefix(r.tshark, "ok") {
		return false
	}
	c := r.counters()
	switch r.expect {
	case "pass":
		return r.pingTo >= 2 && r.pingFrom >= 2 && r.tcpTo && r.tcpFrom && strings.HasPrefix(c, "ok")
	case "blackhole":
		return r.pingTo == 0 && r.pingFrom == 0 && strings.HasPrefix(c, "dropped")
	}
	return strings.HasPrefix(c, "ok")
}

// message is one captured L2TP message and who sent it.
type message struct {
	src netip.Addr
	msg []byte
	udp *layers.UDP
	ip4 *layers.IPv4
	ip6 *layers.IPv6
}

func readPcap(path string) ([]message, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd, err := pcapgo.NewReader(f)
	if err != nil {
		return nil, err
	}
	var out []message
	for {
		data, _, err := rd.ReadPacketData()
		if err != nil {
			return out, nil
		}
		p := gopacket.NewPacket(data, rd.LinkType(), gopacket.Default)
		var m message
		switch ip := p.NetworkLayer().(type) {
		case *layers.IPv4:
			m.ip4, m.src, m.msg = ip, netip.AddrFrom4([4]byte(ip.SrcIP.To4())), ip.Payload
		case *layers.IPv6:
			m.ip6, m.src, m.msg = ip, netip.AddrFrom16([16]byte(ip.SrcIP)), ip.Payload
		default:
			continue
		}
		if u, ok := p.TransportLayer().(*layers.UDP); ok {
			m.udp, m.msg = u, u.Payload
		}
		out = append(out, m)
	}
}

func (r *caseRun) wireSession(s side) encap.Session {
	ck, _ := encap.ParseCookie(s.cookie) // "" is no cookie
	pk, _ := encap.ParseCookie(s.peerCookie)
	if s.cookie == "" {
		ck = encap.Cookie{}
	}
	if s.peerCookie == "" {
		pk = encap.Cookie{}
	}
	return encap.Session{Encap: r.encap, SessionID: s.sid, PeerSessionID: s.psid, Cookie: ck, PeerCookie: pk, L2Spec: r.l2spec}
}

// checkWire finds the probe frame as each end sent it and compares the two
// packets with the gopacket layer: the L2TP messages must be equal byte for
// byte except the session ID and cookie (each the sender's configured
// value), and the outer headers alike but for addresses, IP ID, ports (each
// the configured ones) and checksums.
func (r *caseRun) checkWire() string {
	msgs, err := readPcap(r.pcap)
	if err != nil {
		return err.Error()
	}
	ks, us := r.wireSession(r.k), r.wireSession(r.u)
	table := layer.NewTable().AddSession(&ks)
	find := func(from netip.Addr, s *encap.Session) (*message, *layer.L2TPv3) {
		for i := range msgs {
			m := &msgs[i]
			l := layer.L2TPv3{Encap: r.encap, Table: table}
			if m.src != from || l.DecodeFromBytes(m.msg, gopacket.NilDecodeFeedback) != nil || l.Control() {
				continue
			}
			if bytes.Equal(l.Payload, probe) && l.SessionID == s.PeerSessionID {
				return m, &l
			}
		}
		return nil, nil
	}
	km, kl := find(r.kAddr, &ks)
	um, ul := find(r.uAddr, &us)
	if km == nil || um == nil {
		return fmt.Sprintf("probe not seen (kernel %v, l2tpu %v)", km != nil, um != nil)
	}
	if !bytes.Equal(kl.Cookie, ks.Cookie.Bytes()) || !bytes.Equal(ul.Cookie, us.Cookie.Bytes()) {
		return fmt.Sprintf("cookies %x / %x", kl.Cookie, ul.Cookie)
	}
	// Blank the two configured fields and compare the rest.
	blank := func(m []byte, l *layer.L2TPv3) []byte {
		b := append([]byte(nil), m...)
		off := 0
		if r.encap == encap.EncapUDP {
			off = 4
		}
		for j := off; j < off+4+len(l.Cookie); j++ {
			b[j] = 0
		}
		return b
	}
	if kb, ub := blank(km.msg, kl), blank(um.msg, ul); !bytes.Equal(kb, ub) {
		return fmt.Sprintf("L2TP differs:\nkernel %x\nl2tpu  %x", kb, ub)
	}
	if km.udp != nil {
		if km.udp.SrcPort != layers.UDPPort(r.kPort) || um.udp.SrcPort != layers.UDPPort(r.uPort) || km.udp.Length != um.udp.Length {
			return "UDP header differs"
		}
		// With GSO (the default) l2tpu checksums every message; the
		// byte-exact path sends 0 as the kernel does.
		if km.ip4 != nil && (km.udp.Checksum != 0 || (um.udp.Checksum == 0) != r.exact) {
			return fmt.Sprintf("IPv4 UDP checksums kernel %#x / l2tpu %#x (exact %v), want 0 / %s", km.udp.Checksum, um.udp.Checksum, r.exact,
				map[bool]string{true: "0", false: "non-zero"}[r.exact])
		}
		if km.ip6 != nil && (km.udp.Checksum == 0 || um.udp.Checksum == 0) {
			return "IPv6 UDP checksum 0"
		}
	}
	if km.ip4 != nil {
		k, u := km.ip4, um.ip4
		if k.TTL != u.TTL || k.TOS != u.TOS || k.Flags != u.Flags || k.Protocol != u.Protocol || k.Length != u.Length || k.IHL != u.IHL {
			return fmt.Sprintf("IPv4 header differs: kernel ttl %d tos %d flags %v; l2tpu ttl %d tos %d flags %v", k.TTL, k.TOS, k.Flags, u.TTL, u.TOS, u.Flags)
		}
	} else {
		k, u := km.ip6, um.ip6
		if k.HopLimit != u.HopLimit || k.TrafficClass != u.TrafficClass || k.NextHeader != u.NextHeader || k.Length != u.Length {
			return "IPv6 header differs"
		}
	}
	return "ok"
}

// checkTshark dissects the capture with tshark: every packet l2tpu sent is
// L2TPv3 with l2tpu's session ID and cookie, every kernel packet with the
// kernel's; it also counts the kernel's packets with the S bit.
func (r *caseRun) checkTshark() string {
	args := []string{"-r", r.pcap, "-o", fmt.Sprintf("l2tp.cookie_size:cookie%d", len(r.k.cookie)/2),
		"-o", "l2tp.l2_specific:" + map[encap.L2Spec]string{encap.L2SpecNone: "none", encap.L2SpecDefault: "default"}[r.l2spec],
		"-d", "l2tp.pw_type==0,eth", "-T", "fields", "-E", "separator=|",
		"-e", "ip.src", "-e", "ipv6.src", "-e", "l2tp.sid", "-e", "l2tp.cookie", "-e", "l2tp.l2_spec_s"}
	if r.encap == encap.EncapUDP {
		args = append(args, "-d", fmt.Sprintf("udp.port==%d,l2tp", r.kPort))
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		return "tshark: " + err.Error()
	}
	if d := os.Getenv("L2TPU_INTEROP_DEBUG"); d != "" {
		os.WriteFile(filepath.Join(d, r.name+".tshark.txt"), out, 0o644)
		b, _ := os.ReadFile(r.pcap)
		os.WriteFile(filepath.Join(d, r.name+".pcap"), b, 0o644)
	}
	nU, nK := 0, 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(l, "|")
		if len(f) < 5 {
			continue
		}
		// Fields list outer then inner values ("192.0.2.1,203.0.113.2");
		// with an IPv6 outer header, ip.src is the inner packet's.
		first := func(v string) string { return strings.Split(v, ",")[0] }
		src := first(f[0])
		if f[1] != "" {
			src = first(f[1])
		}
		f[2], f[3], f[4] = first(f[2]), first(f[3]), first(f[4])
		sid, err := strconv.ParseUint(f[2], 0, 32)
		if err != nil {
			return fmt.Sprintf("not dissected as L2TPv3: %q", l)
		}
		cookie := strings.ReplaceAll(f[3], ":", "")
		switch src {
		case r.uAddr.String():
			nU++
			if uint32(sid) != r.u.psid || cookie != r.u.cookie {
				return fmt.Sprintf("l2tpu packet with session %#x cookie %q", sid, cookie)
			}
		case r.kAddr.String():
			nK++
			if uint32(sid) != r.k.psid || cookie != r.k.cookie {
				return fmt.Sprintf("kernel packet with session %#x cookie %q", sid, cookie)
			}
			if f[4] == "1" || f[4] == "True" {
				r.kS++
			}
		default:
			return fmt.Sprintf("packet from %q", src)
		}
	}
	if nU == 0 {
		return "no l2tpu packets"
	}
	return fmt.Sprintf("ok %d+%d", nU, nK)
}

func (r *caseRun) row() string {
	v := "PASS"
	if !r.verdict() {
		v = "**FAIL**"
	}
	tcp := func(b bool) string {
		if r.expect != "pass" {
			return "-"
		}
		if b {
			return "ok"
		}
		return "no"
	}
	exp := r.expect
	if exp == "" {
		exp = "check"
	}
	return fmt.Sprintf("| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s |", r.name, exp, r.pingTo, r.pingFrom, tcp(r.tcpTo), tcp(r.tcpFrom), r.counters(), r.wire, r.tshark, v)
}

func negatives() []kcase {
	kc, uc := cookiePair(4)
	base := func(name string) kcase {
		return kcase{name: name, encap: encap.EncapUDP, l2spec: encap.L2SpecDefault,
			k: side{cookie: kc, peerCookie: uc, seq: "none"}, u: side{cookie: uc, peerCookie: kc, seq: "none"}}
	}
	var cs []kcase
	c := base("neg-cookie-l2tpu-to-kernel")
	c.k.peerCookie = "0badc0de"
	c.check = func(r *caseRun) string {
		if r.dK[3] == 0 && r.dK[5] == r.dU.TxPackets && r.dU.TxPackets > 0 && r.dU.RxPackets == r.dK[0] {
			return fmt.Sprintf("ok: kernel dropped all %d (rx errors)", r.dK[5])
		}
		return fmt.Sprintf("kernel rx %v, l2tpu %+v", r.dK, r.dU)
	}
	cs = append(cs, c)
	c = base("neg-cookie-kernel-to-l2tpu")
	c.u.peerCookie = "0badc0de"
	c.check = func(r *caseRun) string {
		if r.dU.RxPackets == 0 && r.dU.RxCookieDiscards == r.dK[0] && r.dU.RxErrors == r.dK[0] && r.dK[0] > 0 {
			return fmt.Sprintf("ok: l2tpu rx_cookie_discards %d", r.dU.RxCookieDiscards)
		}
		return fmt.Sprintf("kernel tx %d, l2tpu %+v", r.dK[0], r.dU)
	}
	cs = append(cs, c)
	c = base("neg-kernel-seq-recv-vs-unsequenced")
	c.k.seq = "recv"
	c.check = func(r *caseRun) string {
		if r.dK[3] == 0 && r.dK[5] == r.dU.TxPackets && r.dU.TxPackets > 0 {
			return fmt.Sprintf("ok: kernel dropped all %d", r.dK[5])
		}
		return fmt.Sprintf("kernel %v, l2tpu tx %d", r.dK, r.dU.TxPackets)
	}
	cs = append(cs, c)
	c = base("neg-l2tpu-seq-recv-vs-unsequenced")
	c.u.seq = "recv"
	c.check = func(r *caseRun) string {
		if r.dU.RxPackets == 0 && r.dU.RxSeqDiscards == r.dK[0] && r.dK[0] > 0 {
			return fmt.Sprintf("ok: l2tpu rx_seq_discards %d", r.dU.RxSeqDiscards)
		}
		return fmt.Sprintf("kernel tx %d, l2tpu %+v", r.dK[0], r.dU)
	}
	cs = append(cs, c)
	c = base("neg-kernel-auto-send-seq")
	c.u.seq = "send"
	c.check = func(r *caseRun) string {
		if r.kSendSeq && r.kS > 0 && r.pingTo >= 2 && r.pingFrom >= 2 && r.dU.RxErrors == 0 {
			return fmt.Sprintf("ok: kernel turned send_seq on, %d sequenced packets", r.kS)
		}
		return fmt.Sprintf("kernel send_seq %v, %d with S, pings %d/%d", r.kSendSeq, r.kS, r.pingTo, r.pingFrom)
	}
	cs = append(cs, c)
	return cs
}

// TestInterop is make interop. It needs root, QEMU, tcpdump and tshark
// (.ci/deps.sh interop installs them) and downloads the Debian kernel once.
func TestInterop(t *testing.T) {
	if os.Getenv("L2TPU_INTEROP") != "1" {
		t.Skip("the interop suite runs with L2TPU_INTEROP=1 (make interop)")
	}
	privtest.Require(t)
	for _, tool := range []string{"qemu-system-x86_64", "tcpdump", "tshark", "apt-get", "dpkg-deb", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run .ci/deps.sh interop", tool)
		}
	}
	start := time.Now()
	tp := newTopo(t)
	var rows []string
	failed := 0
	header := "| case | expect | ping → kernel | ping ← kernel | TCP → | TCP ← | counters (l2tpu vs kernel) | wire | tshark | verdict |\n|---|---|---|---|---|---|---|---|---|---|"
	cases := append(append(matrix(), negatives()...), exactCases()...)
	if only := os.Getenv("L2TPU_INTEROP_ONLY"); only != "" {
		var sel []kcase
		for _, c := range cases {
			if strings.Contains(c.name, only) {
				sel = append(sel, c)
			}
		}
		cases = sel
	}
	// Every fast path on for the matrix; the byte-exact path for the
	// exact cases.
	tp.restartDaemon(t, fastFlags...)
	privRows, privFailed := tp.checkPrivileges(t)
	failed += privFailed
	exact := false
	for i, c := range cases {
		if c.exact != exact {
			flags := fastFlags
			if c.exact {
				flags = exactFlags
			}
			tp.restartDaemon(t, flags...)
			exact = c.exact
		}
		r := tp.runKernel(t, c, i+1)
		rows = append(rows, r.row())
		if !r.verdict() {
			failed++
			t.Errorf("%s", rows[len(rows)-1])
		}
		fmt.Printf("[%3d/%d %5.0fs] %s\n", i+1, len(cases), time.Since(start).Seconds(), rows[len(rows)-1])
	}
	if exact {
		tp.restartDaemon(t, fastFlags...)
	}
	kernelTime := time.Since(start)
	qrows, qfailed := tp.runQEMU(t)
	failed += qfailed
	report := fmt.Sprintf("# l2tpu interop: Linux kernel %s (QEMU, %s) and QEMU l2tpv3 against l2tpu\n\n"+
		"%s. Kernel cases %d in %s; QEMU cases %d; total %s. %d failed. l2tpu daemon flags: %s (every fast path on), "+
		"exact-* cases %s (the byte-exact path).\n\n## Kernel\n\n%s\n%s\n\n## Unprivileged users\n\n%s\n\n## QEMU l2tpv3 (guestless, hubport)\n\n%s\n",
		tp.vmRelease(), tp.vm.Accel, time.Now().UTC().Format("2006-01-02 15:04 UTC"), len(cases), kernelTime.Round(time.Second),
		len(qrows)-2, time.Since(start).Round(time.Second), failed, strings.Join(fastFlags, " "), strings.Join(exactFlags, " "), header, strings.Join(rows, "\n"), strings.Join(privRows, "\n"), strings.Join(qrows, "\n"))
	out := os.Getenv("L2TPU_INTEROP_OUT")
	if out == "" {
		out = filepath.Join("..", "build", "interop-results.md")
	}
	os.MkdirAll(filepath.Dir(out), 0o755)
	if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
		t.Error(err)
	}
	fmt.Printf("\n%s\nwritten to %s\n", report, out)
}

func (tp *topo) vmRelease() string {
	out, _ := tp.vm.Run("uname -r")
	return strings.TrimSpace(out)
}
