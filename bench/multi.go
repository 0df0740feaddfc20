package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/internal/netns"
)

// pws are pseudowires of one method between the namespaces, for the
// measures under load: n of them in one tunnel (sessions of one l2tpu
// tunnel; VNIs of one VXLAN port; QEMU has no such thing, its pseudowires
// are processes of their own) and, with other, one more in another tunnel
// (another UDP port).
type pws struct {
	same       []string // B's inner address of each of the n
	devs       []string // B's interface of each of the n
	other      string   // B's inner address of the one in another tunnel
	sameTunnel bool     // the n share one tunnel, and so its socket
	teardown   func()
}

// maxPWs is how many /30s of 198.51.100.0/24 there are.
const maxPWs = 64

// pwAddrs are pseudowire i's inner addresses: A's with its prefix, and B's.
func pwAddrs(i int) (a, b string) {
	return fmt.Sprintf("198.51.100.%d/30", 4*i+1), fmt.Sprintf("198.51.100.%d", 4*i+2)
}

// The pseudowire in another tunnel: 203.0.113.0/24, as the single link's.
const otherA, otherB = "203.0.113.1/24", "203.0.113.2"

// loadedMethods can carry several pseudowires.
func loadedMethod(m string) bool {
	_, l2 := variants[m]
	return m == "vxlan" || m == "qemu" || l2
}

// setupPWs builds n pseudowires of method (and one in another tunnel).
func setupPWs(method string, n int, other bool) pws {
	if n > maxPWs {
		fatal(fmt.Errorf("%d pseudowires: at most %d", n, maxPWs))
	}
	p := pws{sameTunnel: true}
	for i := range n {
		_, b := pwAddrs(i)
		p.same = append(p.same, b)
	}
	if other {
		p.other = otherB
	}
	switch method {
	case "vxlan":
		var devs []string
		add := func(dev string, vni, port int, a, b string) {
			for i, e := range ends {
				must(in(e.ns, "ip", "link", "add", dev, "type", "vxlan", "id", fmt.Sprint(vni), "remote", e.remote, "dstport", fmt.Sprint(port))...)
				inner(e.ns, dev, []string{a, b + "/30"}[i])
			}
			devs = append(devs, dev)
		}
		for i := range n {
			a, b := pwAddrs(i)
			add(fmt.Sprintf("vx%d", i), 100+i, 4789, a, b)
			p.devs = append(p.devs, fmt.Sprintf("vx%d", i))
		}
		if other {
			for i, e := range ends {
				must(in(e.ns, "ip", "link", "add", "vxo", "type", "vxlan", "id", "900", "remote", e.remote, "dstport", "4790")...)
				inner(e.ns, "vxo", []string{otherA, otherB + "/24"}[i])
			}
			devs = append(devs, "vxo")
		}
		p.teardown = func() {
			for _, e := range ends {
				for _, d := range devs {
					sh(in(e.ns, "ip", "link", "del", d)...)
				}
			}
		}
	case "qemu":
		p.sameTunnel = false
		var cmds []*exec.Cmd
		for i := range n {
			a, b := pwAddrs(i)
			cmds = append(cmds, qemuPW(fmt.Sprintf("qt%d", i), 1701+i, a, b+"/30")...)
			p.devs = append(p.devs, fmt.Sprintf("qt%d", i))
		}
		if other {
			cmds = append(cmds, qemuPW("qto", 1701+maxPWs, otherA, otherB+"/24")...)
		}
		p.teardown = func() {
			for _, c := range cmds {
				stop(c)
			}
		}
	default:
		v := variants[method]
		for i := range n {
			p.devs = append(p.devs, fmt.Sprintf("pw%d", i))
		}
		startDaemons(v.flags)
		for k, e := range ends {
			var b strings.Builder
			fmt.Fprintf(&b, "add tunnel tunnel_id %s peer_tunnel_id %s local %s remote %s udp_sport 1701 udp_dport 1701\n", e.id, e.peerID, e.local, e.remote)
			for i := range n {
				fmt.Fprintf(&b, "add session name pw%d tunnel_id %s session_id %d peer_session_id %d\n", i, e.id, sid(k, i), sid(1-k, i))
			}
			if other {
				fmt.Fprintf(&b, "add tunnel tunnel_id 1%s peer_tunnel_id 1%s local %s remote %s udp_sport 1702 udp_dport 1702\n", e.id, e.peerID, e.local, e.remote)
				fmt.Fprintf(&b, "add session name pwo tunnel_id 1%s session_id 9%s peer_session_id 9%s\n", e.id, e.id, e.peerID)
			}
			f := filepath.Join(*out, e.ns+"-batch")
			os.WriteFile(f, []byte(b.String()), 0o644)
			must(in(e.ns, *l2tpu, "-batch", f)...)
			for i := range n {
				a, bb := pwAddrs(i)
				inner(e.ns, fmt.Sprintf("pw%d", i), []string{a, bb + "/30"}[k])
			}
			if other {
				inner(e.ns, "pwo", []string{otherA, otherB + "/24"}[k])
			}
		}
		p.teardown = stopDaemons
	}
	return p
}

// sid is end k's session ID of pseudowire i (the peer's is sid(1-k, i)).
func sid(k, i int) int { return 1000*(k+1) + i }

// startDaemons starts both ends' daemons with flags (a client would start
// one with none).
func startDaemons(flags []string) {
	for _, e := range ends {
		err := netns.Do("/run/netns/"+e.ns, func() error {
			return daemon.Start(*l2tpu, filepath.Join(*out, e.ns+"-daemon.log"), flags...)
		})
		if err != nil {
			fatal(err)
		}
	}
}

func stopDaemons() {
	for _, e := range ends {
		daemon.StopInNamespace("/run/netns/" + e.ns)
	}
}

// qemuPW is one QEMU l2tpv3 pseudowire, a process at each end (guestless:
// the l2tpv3 netdev hubbed to a TAP), on UDP port port.
func qemuPW(tap string, port int, a, b string) []*exec.Cmd {
	var cmds []*exec.Cmd
	for i, e := range ends {
		tx, rx := "0x1", "0x2"
		if i == 1 {
			tx, rx = rx, tx
		}
		pt := fmt.Sprint(port)
		cmd := start(in(e.ns, "qemu-system-x86_64", "-M", "none", "-nodefaults", "-nographic",
			"-netdev", "l2tpv3,id=l2,src="+e.local+",dst="+e.remote+",udp=on,srcport="+pt+",dstport="+pt+",txsession="+tx+",rxsession="+rx+",counter=on,pincounter=on",
			"-netdev", "tap,id=t,ifname="+tap+",script=no,downscript=no",
			"-netdev", "hubport,id=h1,hubid=0,netdev=l2", "-netdev", "hubport,id=h2,hubid=0,netdev=t")...)
		cmds = append(cmds, cmd)
		for k := 0; k < 100; k++ {
			if _, err := sh(in(e.ns, "ip", "link", "show", tap)...); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		must(in(e.ns, "ip", "link", "set", tap, "mtu", "1446")...)
		inner(e.ns, tap, []string{a, b}[i])
	}
	return cmds
}
