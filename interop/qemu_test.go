package interop

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/proc"
)

// runQEMU runs l2tpu against QEMU's userspace -netdev l2tpv3, guestless
// (-M none, a hub between the l2tpv3 backend and a TAP), for every
// combination QEMU can express: encap, family, cookie size (QEMU needs
// cookies both ways, of one size) and sublayer (counter+pincounter = the
// default sublayer, all zeros); no sequence numbers (QEMU never sets S).
func (tp *topo) runQEMU(t *testing.T) ([]string, int) {
	rows := []string{"| case | ping → QEMU | ping ← QEMU | l2tpu counters | tshark | verdict |", "|---|---|---|---|---|---|"}
	failed, i := 0, 0
	// The kernel cases' last tunnel and session go first.
	out, _ := tp.l2tpu("show", "tunnel")
	for _, l := range strings.Split(out, "\n") {
		var id int
		if _, err := fmt.Sscanf(l, "Tunnel %d,", &id); err == nil {
			tp.l2tpu("del", "tunnel", "tunnel_id", strconv.Itoa(id))
		}
	}
	for _, e := range []encap.Encap{encap.EncapUDP, encap.EncapIP} {
		for _, v6 := range []bool{false, true} {
			for _, ck := range []int{0, 4, 8} {
				for _, l2 := range []encap.L2Spec{encap.L2SpecNone, encap.L2SpecDefault} {
					i++
					row, ok := tp.qemuCase(t, e, v6, ck, l2, i)
					rows = append(rows, row)
					if !ok {
						failed++
						t.Errorf("%s", row)
					}
					fmt.Printf("[qemu %2d/24] %s\n", i, row)
				}
			}
		}
	}
	return rows, failed
}

func (tp *topo) qemuCase(t *testing.T, e encap.Encap, v6 bool, ck int, l2 encap.L2Spec, i int) (string, bool) {
	fam := "v4"
	uAddr, qAddr := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	if v6 {
		fam = "v6"
		uAddr, qAddr = netip.MustParseAddr("2001:db8:b::1"), netip.MustParseAddr("2001:db8:b::2")
	}
	name := fmt.Sprintf("qemu-%s-%s-c%d-l2%s", e, fam, ck, l2)
	r := &caseRun{kcase: kcase{name: name, encap: e, v6: v6, l2spec: l2}, i: i}
	qc, uc := cookiePair(ck)
	r.u = side{sid: 0x5e6f0000 + uint32(i), psid: 0x1a2b0000 + uint32(i), cookie: uc, peerCookie: qc}
	r.k = side{sid: r.u.psid, psid: r.u.sid, cookie: qc, peerCookie: uc} // QEMU's side, in the kernel's slot
	r.kAddr, r.uAddr = qAddr, uAddr
	r.kPort, r.uPort = uint16(30000+i), uint16(40000+i)
	// QEMU's view: src/dst, txsession = what it sends, rxsession = what it expects.
	opts := []string{"l2tpv3", "id=l2", "src=" + qAddr.String(), "dst=" + uAddr.String(),
		fmt.Sprintf("txsession=%#x", r.k.psid), fmt.Sprintf("rxsession=%#x", r.k.sid)}
	if v6 {
		opts = append(opts, "ipv6=on")
	}
	if e == encap.EncapUDP {
		opts = append(opts, "udp=on", fmt.Sprintf("srcport=%d", r.kPort), fmt.Sprintf("dstport=%d", r.uPort))
	}
	if ck > 0 {
		opts = append(opts, "txcookie=0x"+qc, "rxcookie=0x"+uc)
		if ck == 8 {
			opts = append(opts, "cookie64=on") // (QEMU reads "cookie64=off" as on: never pass it)
		}
	}
	if l2 == encap.L2SpecDefault {
		opts = append(opts, "counter=on", "pincounter=on")
	} else {
		opts = append(opts, "counter=off")
	}
	qtap := fmt.Sprintf("%sq", tp.q.Name)
	if len(qtap) > 15 {
		qtap = qtap[len(qtap)-15:]
	}
	cmd := exec.Command("ip", "netns", "exec", tp.q.Name, "qemu-system-x86_64", "-M", "none", "-nodefaults", "-nographic",
		"-netdev", strings.Join(opts, ","),
		"-netdev", "tap,id=t,ifname="+qtap+",script=no,downscript=no",
		"-netdev", "hubport,id=h1,hubid=0,netdev=l2", "-netdev", "hubport,id=h2,hubid=0,netdev=t")
	var qerr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qerr, &qerr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer proc.Stop(cmd, 5*time.Second)
	up := false
	for j := 0; j < 100 && !up; j++ {
		up = exec.Command("ip", "-n", tp.q.Name, "link", "show", qtap).Run() == nil
		time.Sleep(50 * time.Millisecond)
	}
	if !up {
		return fmt.Sprintf("| %s | qemu did not start: %s |", name, qerr.String()), false
	}
	tp.q.Run(t, "sysctl", "-qw", "net.ipv6.conf."+qtap+".disable_ipv6=1")
	tp.q.Run(t, "ip", "addr", "add", "203.0.113.3/24", "dev", qtap)
	tp.q.Run(t, "ip", "link", "set", qtap, "up")
	ports := ""
	if e == encap.EncapUDP {
		ports = fmt.Sprintf(" udp_sport %d udp_dport %d", r.uPort, r.kPort)
	}
	cookies := ""
	if ck > 0 {
		cookies = " cookie " + uc + " peer_cookie " + qc
	}
	tid := 5000 + i
	for _, c := range []string{
		fmt.Sprintf("add tunnel tunnel_id %d peer_tunnel_id %d encap %s local %s remote %s%s", tid, tid, e, uAddr, qAddr, ports),
		fmt.Sprintf("add session name pw0 tunnel_id %d session_id %d peer_session_id %d%s l2spec_type %s", tid, r.u.sid, r.u.psid, cookies, l2),
	} {
		if out, err := tp.l2tpu(strings.Fields(c)...); err != nil {
			t.Fatalf("%s: %v %s", name, err, out)
		}
	}
	defer tp.l2tpu("del", "tunnel", "tunnel_id", strconv.Itoa(tid))
	tp.u.Run(t, "sysctl", "-qw", "net.ipv6.conf.pw0.disable_ipv6=1")
	tp.u.Run(t, "ip", "addr", "add", "203.0.113.2/24", "dev", "pw0")
	tp.u.Run(t, "ip", "link", "set", "pw0", "up")
	capt := tp.startCapture(t, name, tp.vethU())
	s0, _, _ := tp.sessionStats()
	r.pingTo = tp.pingFromHost("203.0.113.3", 3)
	r.pingFrom, _ = tp.q.Ping("203.0.113.2", 3)
	time.Sleep(200 * time.Millisecond)
	s1, _, _ := tp.sessionStats()
	r.pcap = capt.stop()
	d := statsDelta(s1, s0)
	r.tshark = r.checkTshark()
	counters := fmt.Sprintf("tx %d rx %d errors %d", d.TxPackets, d.RxPackets, d.RxErrors)
	ok := r.pingTo >= 2 && r.pingFrom >= 2 && d.RxErrors == 0 && d.TxErrors == 0 && d.RxPackets > 0 && strings.HasPrefix(r.tshark, "ok")
	v := "PASS"
	if !ok {
		v = "**FAIL**"
	}
	return fmt.Sprintf("| %s | %d | %d | %s | %s | %s |", name, r.pingTo, r.pingFrom, counters, r.tshark, v), ok
}

func (tp *topo) vethU() string { return strings.TrimSuffix(tp.u.Name, "u") + "vu" }
