package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/l2tpu/l2tpu/daemon"
)

// variants are l2tpu's runs: the default, and each performance choice
// changed by its daemon flag.
var variants = map[string]struct {
	flags []string
	note  string
	encap string // "" is udp
	v6    bool   // an IPv6 underlay
}{
	"l2tpu":           {nil, "l2tpu UDP/IPv4, default parameters and fast paths, MTU 1446", "", false},
	"l2tpu-ip":        {nil, "l2tpu encap ip over IPv4, default parameters", "ip", false},
	"l2tpu-udp6":      {nil, "l2tpu UDP/IPv6, default parameters", "", true},
	"l2tpu-ip6":       {nil, "l2tpu encap ip over IPv6, default parameters", "ip", true},
	"l2tpu-exact":     {[]string{"-no-gso"}, "byte-exact wire (-no-gso: checksum 0 as the kernel sends, no UDP GSO)", "", false},
	"l2tpu-no-gro":    {[]string{"-no-gro"}, "-no-gro: no UDP GRO on receive", "", false},
	"l2tpu-no-tso":    {[]string{"-no-tso"}, "-no-tso: no TSO super-frames from the TAP", "", false},
	"l2tpu-no-tapgro": {[]string{"-no-tap-gro"}, "-no-tap-gro: no IFF_VNET_HDR (no TSO, no coalescing on the TAP)", "", false},
	"l2tpu-none":      {[]string{"-no-gso", "-no-gro", "-no-tap-gro"}, "every fast path off (batching only)", "", false},
	"l2tpu-2proc":     {[]string{"-procs", "2"}, "-procs 2: two loops (threads)", "", false},
	"l2tpu-no-turn":   {[]string{"-no-turnaround"}, "-no-turnaround: answers to frames written to the TAP wait for the transmit loop", "", false},
	"l2tpu-no-rt":     {[]string{"-rt-priority", "0"}, "-rt-priority 0: ordinary threads (not realtime)", "", false},
	"l2tpu-no-mod":    {[]string{"-moderation", "0"}, "-moderation 0: loops look again at once after every round", "", false},
}

// link is a method's inner link between the namespaces.
type link struct {
	target   string       // B's inner address
	teardown func()       // removes the link
	note     string       // how it is set up
	pids     func() []int // the processes that carry it (none for the kernel's)
}

func noPIDs() []int { return nil }

// unavailable says why a method cannot run on this host ("" if it can).
func unavailable(method string) string {
	switch method {
	case "qemu":
		if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
			return "qemu-system-x86_64 is not installed"
		}
	case "kernel-l2tp":
		return kernelL2TP()
	case "wireguard-go":
		return wireguardGoMissing()
	}
	return ""
}

// kernelL2TP loads the kernel's L2TPv3 Ethernet pseudowire modules and
// says why it could not ("" when they are there).
func kernelL2TP() string {
	if _, err := os.Stat("/sys/module/l2tp_eth"); err == nil {
		return ""
	}
	if _, err := exec.LookPath("modprobe"); err != nil {
		return "the host kernel has no l2tp_eth module loaded, and there is no modprobe to load one"
	}
	if out, err := exec.Command("modprobe", "l2tp_eth").CombinedOutput(); err != nil {
		return fmt.Sprintf("the host kernel has no L2TP modules (modprobe l2tp_eth: %s)", strings.TrimSpace(string(out)))
	}
	if _, err := os.Stat("/sys/module/l2tp_eth"); err != nil {
		// l2tpu's modprobe shim answers without loading anything.
		return "modprobe l2tp_eth succeeded but loaded no module (l2tpu's modprobe shim is first on PATH?)"
	}
	return ""
}

func inner(ns, dev, cidr string) {
	sh(in(ns, "sysctl", "-qw", "net.ipv6.conf."+dev+".disable_ipv6=1")...)
	must(in(ns, "ip", "addr", "add", cidr, "dev", dev)...)
	must(in(ns, "ip", "link", "set", dev, "up")...)
}

// ends are the two sides: namespace, tunnel and session IDs, outer and inner
// addresses.
var ends = [2]struct {
	ns, id, peerID, local, remote, local6, remote6, inner string
}{
	{"", "100", "200", "192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2", "203.0.113.1/24"},
	{"", "200", "100", "192.0.2.2", "192.0.2.1", "2001:db8::2", "2001:db8::1", "203.0.113.2/24"},
}

func init() { ends[0].ns, ends[1].ns = nsA, nsB }

// setup builds a method's link.
func setup(method string) link {
	const target = "203.0.113.2"
	switch method {
	case "direct":
		return link{"192.0.2.2", func() {}, "veth, no tunnel", noPIDs}
	case "vxlan":
		for _, e := range ends {
			must(in(e.ns, "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "remote", e.remote, "dstport", "4789")...)
			inner(e.ns, "vx0", e.inner)
		}
		return link{target, func() {
			for _, e := range ends {
				sh(in(e.ns, "ip", "link", "del", "vx0")...)
			}
		}, "kernel VXLAN, MTU 1450", noPIDs}
	case "kernel-l2tp":
		// The same pseudowire as l2tpu's, configured the same way.
		for _, e := range ends {
			must(in(e.ns, "ip", "l2tp", "add", "tunnel", "tunnel_id", e.id, "peer_tunnel_id", e.peerID, "encap", "udp",
				"local", e.local, "remote", e.remote, "udp_sport", "1701", "udp_dport", "1701")...)
			must(in(e.ns, "ip", "l2tp", "add", "session", "name", "pw0", "tunnel_id", e.id, "session_id", e.id, "peer_session_id", e.peerID)...)
			inner(e.ns, "pw0", e.inner)
		}
		return link{target, func() {
			for _, e := range ends {
				sh(in(e.ns, "ip", "l2tp", "del", "tunnel", "tunnel_id", e.id)...)
			}
		}, "the kernel's l2tp_eth, UDP/IPv4, ip l2tp defaults", noPIDs}
	case "qemu":
		cmds := qemuPW("qt0", 1701, ends[0].inner, ends[1].inner)
		return link{target, func() {
			for _, c := range cmds {
				stop(c)
			}
		}, "QEMU l2tpv3 UDP, guestless, MTU 1446", func() []int { return []int{cmds[0].Process.Pid, cmds[1].Process.Pid} }}
	case "wireguard-go":
		return wireguardGo()
	}
	v, ok := variants[method]
	if !ok {
		fatal(fmt.Errorf("unknown method %s (have %s)", method, strings.Join(allMethods, ",")))
	}
	startDaemons(v.flags)
	for _, e := range ends {
		local, remote := e.local, e.remote
		if v.v6 {
			local, remote = e.local6, e.remote6
		}
		args := []string{*l2tpu, "add", "tunnel", "session", "tunnel_id", e.id, "peer_tunnel_id", e.peerID,
			"local", local, "remote", remote, "session_id", e.id, "peer_session_id", e.peerID, "name", "pw0"}
		if v.encap == "ip" {
			args = append(args, "encap", "ip")
		} else {
			args = append(args, "udp_sport", "1701", "udp_dport", "1701")
		}
		must(in(e.ns, args...)...)
		inner(e.ns, "pw0", e.inner)
	}
	return link{target, stopDaemons, v.note, daemonPIDs}
}

// daemonPIDs are the l2tpu daemons of both namespaces, from their PID files.
func daemonPIDs() []int {
	var pids []int
	for _, e := range ends {
		p, err := daemon.PathsAt("/run/netns/" + e.ns)
		if err != nil {
			continue
		}
		if pid, err := daemon.RecordedPID(p.PID); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}
