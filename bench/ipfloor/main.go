// Command ipfloor measures the floor under IP encapsulation on this
// machine: how fast one thread sends 1400-byte messages to a veth peer
// (whose kernel receives and queues them, inline on the sending CPU, as
// veth does) by each way the kernel offers, with nothing of l2tpu around
// them. It is the prototype of the alternatives issue 20 asked for, kept
// so the figures in the README can be measured again:
//
//	raw115   a protocol-115 raw socket, bound and connected (l2tpu -ip-proto115)
//	hdrincl  an IPPROTO_RAW socket writing the IPv4 header (l2tpu's default)
//	packet   an AF_PACKET socket writing the Ethernet and IPv4 headers, with
//	         PACKET_QDISC_BYPASS: no routing, netfilter or qdisc
//	udp      a connected UDP socket, one message per packet
//	udpgso   a connected UDP socket, 40 messages per send (UDP GSO), which
//	         veth carries whole and a GRO socket receives whole
//
// All send with sendmmsg in batches of 64. Run as root: make bench-ipfloor.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/fixture"
	"github.com/l2tpu/l2tpu/internal/netns"
)

var (
	secs   = flag.Duration("t", 3*time.Second, "how long each method sends")
	size   = flag.Int("s", 1400, "message size")
	rounds = flag.Int("n", 2, "rounds of every method")
	prefix = fmt.Sprintf("ipf%d", os.Getpid()%10000)
)

const (
	batch   = 64
	gsoSegs = 40 // 40 × 1400 fits one UDP datagram
)

var (
	src = [4]byte{192, 0, 2, 1}
	dst = [4]byte{192, 0, 2, 2}
)

func main() {
	flag.Parse()
	nsA, nsB := prefix+"a", prefix+"b"
	cleanup = func() {
		exec.Command("ip", "netns", "del", nsA).Run()
		exec.Command("ip", "netns", "del", nsB).Run()
	}
	defer cleanup()
	for _, args := range [][]string{
		{"netns", "add", nsA}, {"netns", "add", nsB},
		{"link", "add", prefix + "va", "netns", nsA, "type", "veth", "peer", "name", prefix + "vb", "netns", nsB},
		{"-n", nsA, "addr", "add", "192.0.2.1/24", "dev", prefix + "va"},
		{"-n", nsB, "addr", "add", "192.0.2.2/24", "dev", prefix + "vb"},
		{"-n", nsA, "link", "set", prefix + "va", "up"},
		{"-n", nsB, "link", "set", prefix + "vb", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fatal(fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out))
		}
	}
	time.Sleep(time.Second) // carrier
	peer, err := net.ParseMAC(macOf(nsB, prefix+"vb"))
	if err != nil {
		fatal(err)
	}
	// The receivers drain what arrives, as l2tpu's listener would.
	var stop atomic.Bool
	defer stop.Store(true)
	for _, recv := range []func(){
		func() { drain(&stop, unix.AF_INET, unix.SOCK_RAW, encap.IPProto, nil) },
		func() { drain(&stop, unix.AF_INET, unix.SOCK_DGRAM, 0, &unix.SockaddrInet4{Addr: dst, Port: 1701}) },
	} {
		go netns.Do("/run/netns/"+nsB, func() error { recv(); return nil })
	}
	time.Sleep(200 * time.Millisecond)
	fmt.Printf("one thread, %d-byte messages, veth, %s each; the receiver's kernel work runs on the sending CPU (veth)\n", *size, *secs)
	fmt.Printf("%-8s %10s %10s %12s %10s\n", "method", "kpps", "Gb/s", "thread CPU", "µs/msg")
	for r := 0; r < *rounds; r++ {
		for _, m := range []string{"raw115", "hdrincl", "packet", "udp", "udpgso"} {
			err := netns.Do("/run/netns/"+nsA, func() error { return send(m, prefix+"va", peer) })
			if err != nil {
				fatal(fmt.Errorf("%s: %w", m, err))
			}
		}
	}
}

func macOf(ns, dev string) string {
	out, err := exec.Command("ip", "-n", ns, "-o", "link", "show", dev).Output()
	if err != nil {
		fatal(err)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	fatal(fmt.Errorf("no MAC in %q", out))
	return ""
}

// drain reads from a socket until stop (in the namespace of its thread).
func drain(stop *atomic.Bool, family, typ, proto int, bind unix.Sockaddr) {
	fd, err := unix.Socket(family, typ, proto)
	if err != nil {
		fatal(err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	if bind != nil {
		if err := unix.Bind(fd, bind); err != nil {
			fatal(err)
		}
		unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1)
	}
	buf := make([]byte, 65536)
	for !stop.Load() {
		unix.Recvfrom(fd, buf, 0)
	}
}

// send measures one method on the calling thread (locked by netns.Do).
func send(method, dev string, peer net.HardwareAddr) error {
	payload := make([]byte, *size)
	binary.BigEndian.PutUint32(payload, 7) // a session ID
	var fd, perSend int
	var bufs [][]byte
	var err error
	perSend = 1
	switch method {
	case "raw115", "hdrincl":
		proto := encap.IPProto
		if method == "hdrincl" {
			proto = unix.IPPROTO_RAW
		}
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, proto); err != nil {
			return err
		}
		for i := 0; i < batch; i++ {
			b := payload
			if method == "hdrincl" {
				b = make([]byte, 20+*size)
				b[0], b[8], b[9] = 0x45, 64, encap.IPProto
				copy(b[12:], src[:])
				copy(b[16:], dst[:])
				copy(b[20:], payload)
			}
			bufs = append(bufs, b)
		}
	case "udp", "udpgso":
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0); err != nil {
			return err
		}
		if method == "udpgso" {
			if err := unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT, *size); err != nil {
				return err
			}
			big := make([]byte, 0, gsoSegs**size)
			for i := 0; i < gsoSegs; i++ {
				big = append(big, payload...)
			}
			perSend = gsoSegs
			for i := 0; i < batch; i++ {
				bufs = append(bufs, big)
			}
		} else {
			for i := 0; i < batch; i++ {
				bufs = append(bufs, payload)
			}
		}
	case "packet":
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			return err
		}
		for i := 0; i < batch; i++ {
			b := make([]byte, 14+20+*size)
			copy(b, peer)
			copy(b[6:], ifi.HardwareAddr)
			b[12] = 0x08 // IPv4
			ip := b[14:]
			ip[0], ip[8], ip[9] = 0x45, 64, encap.IPProto
			binary.BigEndian.PutUint16(ip[2:], uint16(20+*size))
			binary.BigEndian.PutUint16(ip[4:], uint16(i+1))
			copy(ip[12:], src[:])
			copy(ip[16:], dst[:])
			binary.BigEndian.PutUint16(ip[10:], ^fixture.Checksum(ip[:20]))
			copy(ip[20:], payload)
			bufs = append(bufs, b)
		}
	}
	defer unix.Close(fd)
	if method != "packet" {
		port := 0
		if method == "udp" || method == "udpgso" {
			port = 1701
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src, Port: port}); err != nil {
			return err
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst, Port: port}); err != nil {
			return err
		}
		if method == "raw115" {
			unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
		}
	}
	iov := make([]unix.Iovec, len(bufs))
	hdrs := make([]mmsghdr, len(bufs))
	for i := range hdrs {
		iov[i].Base = &bufs[i][0]
		iov[i].SetLen(len(bufs[i]))
		hdrs[i].hdr.Iov = &iov[i]
		hdrs[i].hdr.SetIovlen(1)
	}
	runtime.Gosched()
	var ru0, ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_THREAD, &ru0)
	start := time.Now()
	sent := 0
	for time.Since(start) < *secs {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
		if e != 0 && e != unix.ENOBUFS && e != unix.EAGAIN {
			return e
		}
		if e == 0 {
			sent += int(n) * perSend
		}
	}
	el := time.Since(start)
	unix.Getrusage(unix.RUSAGE_THREAD, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	fmt.Printf("%-8s %10.0f %10.2f %11.0f%% %10.2f\n", method, float64(sent)/el.Seconds()/1e3,
		float64(sent)*float64(*size)*8/el.Seconds()/1e9, 100*cpu.Seconds()/el.Seconds(), cpu.Seconds()*1e6/float64(sent))
	return nil
}

// mmsghdr is struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// cleanup removes the namespaces (and with them the veth).
var cleanup = func() {}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "ipfloor:", err)
	cleanup()
	os.Exit(1)
}
