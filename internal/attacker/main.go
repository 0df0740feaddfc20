// Command attacker is what the privilege tests run as an unprivileged user
// (nobody) to try what a hostile local user would:
//
//	attacker squat FILE [ANSWER]  bind the daemon's control socket (@l2tpu),
//	                        record what clients send into FILE, answer ANSWER
//	                        (a JSON line; "{}" by default)
//	attacker bind           bind @l2tpu without listening, for 60 s
//	attacker fill N         connect to @l2tpu and close, N times (filling the
//	                        queue of a listener no one accepts on); print
//	                        "connected C"
//	attacker send JSON      send the request line JSON to @l2tpu, print the
//	                        answer
//	attacker bindloop SECS  bind @l2tpu over and over for SECS seconds; print
//	                        "ok", then "won" if it ever could, else "lost"
//	attacker listen NAME... listen (seqpacket) at each NAME (@: abstract), as
//	                        a squatter of a keeper's name; print "ok" and the
//	                        errors, hold them 60 s
//	attacker hold N         open N connections to @l2tpu, send nothing, and
//	                        print how many the daemon kept ("held H closed C"),
//	                        holding them 3 s
//	attacker daemon         sleep 60 s under a daemon's argv[1] ("daemon"),
//	                        as a process that took a dead daemon's PID
//	attacker udp ADDR:PORT    bind a UDP socket there (SO_REUSEADDR and
//	                        SO_REUSEPORT, as a squatter would), print "ok"
//	                        or the error, then for 3 s count what arrives
//	                        ("received N")
//	attacker unreach L R N  send N forged ICMP port unreachables (one a
//	                        millisecond) quoting a UDP datagram from L to R
//	                        (ADDR:PORT, IPv4), to L, as R's host would;
//	                        needs a raw socket
//	attacker escalate PROG  connect to @l2tpu (behind 900 connections a child
//	                        opened, which keep the daemon busy), then execute
//	                        PROG (a set-user-ID root copy of this program) as
//	                        "attacker escalated FD", which sends {"op":"list"}
//	                        on the connection it inherited and prints the
//	                        answer
//	attacker attach IFNAME TUN  attach a queue to a TAP device (TUNSETIFF)
//	                        through TUN, a node of /dev/net/tun: mode 0666
//	                        on stock distributions, where anyone opens it
//
// It prints "ok" or the error, and exits 0 either way (the caller judges).
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/fixture"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: attacker squat FILE | attach IFNAME TUN")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "squat":
		answer := "{}"
		if len(os.Args) > 3 {
			answer = os.Args[3]
		}
		squat(os.Args[2], answer)
	case "bind":
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrUnix{Name: "@l2tpu"})
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("ok")
		time.Sleep(60 * time.Second)
	case "fill":
		// Connect to @l2tpu and close, N times: the connections wait in
		// the listener's queue until someone accepts them.
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			os.Exit(2)
		}
		done := 0
		for range n {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				break
			}
			err = unix.Connect(fd, &unix.SockaddrUnix{Name: "@l2tpu"})
			unix.Close(fd)
			if err == nil {
				done++
			}
		}
		fmt.Println("connected", done)
	case "send":
		// One request line to @l2tpu; print the answer.
		c, err := net.Dial("unix", "@l2tpu")
		if err != nil {
			fmt.Println(err)
			return
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(os.Args[2] + "\n"))
		b, _ := io.ReadAll(c)
		fmt.Print(string(b))
	case "bindloop":
		// Bind @l2tpu over and over for SECS seconds, as a user waiting
		// for a daemon's restart would: "won" if it ever got the name.
		secs, err := strconv.Atoi(os.Args[2])
		if err != nil {
			os.Exit(2)
		}
		fmt.Println("ok")
		won := false
		for end := time.Now().Add(time.Duration(secs) * time.Second); time.Now().Before(end) && !won; {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				continue
			}
			won = unix.Bind(fd, &unix.SockaddrUnix{Name: "@l2tpu"}) == nil
			unix.Close(fd)
		}
		fmt.Println(map[bool]string{true: "won", false: "lost"}[won])
	case "listen":
		// A seqpacket listener at each NAME (@ for abstract), as a
		// squatter of a keeper's name would.
		var errs []string
		for _, name := range os.Args[2:] {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
			if err == nil {
				err = unix.Bind(fd, &unix.SockaddrUnix{Name: name})
			}
			if err == nil {
				err = unix.Listen(fd, 8)
			}
			if err != nil {
				errs = append(errs, name+": "+err.Error())
			}
		}
		fmt.Println(strings.Join(append([]string{"ok"}, errs...), "; "))
		time.Sleep(60 * time.Second)
	case "hold":
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			os.Exit(2)
		}
		hold(n)
	case "daemon":
		fmt.Println("ok")
		time.Sleep(60 * time.Second)
	case "udp":
		squatUDP(os.Args[2])
	case "unreach":
		n, err := strconv.Atoi(os.Args[4])
		if err != nil {
			os.Exit(2)
		}
		fmt.Println(unreach(netip.MustParseAddrPort(os.Args[2]), netip.MustParseAddrPort(os.Args[3]), n))
	case "escalate":
		fmt.Println(escalate(os.Args[2]))
	case "junk":
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			os.Exit(2)
		}
		for range n {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil || unix.Connect(fd, &unix.SockaddrUnix{Name: "@l2tpu"}) != nil {
				break // the backlog is full: enough
			}
		}
		fmt.Print("ok\n")
		time.Sleep(10 * time.Second)
	case "escalated":
		fd, err := strconv.Atoi(os.Args[2])
		if err != nil {
			os.Exit(2)
		}
		fmt.Println(escalated(fd))
	case "attach":
		if len(os.Args) != 4 {
			os.Exit(2)
		}
		fmt.Println(attach(os.Args[2], os.Args[3]))
	default:
		os.Exit(2)
	}
}

func unreach(local, remote netip.AddrPort, n int) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return err.Error()
	}
	defer unix.Close(fd)
	m := fixture.PortUnreachable(local, remote)
	l := local.Addr().As4()
	for range n {
		if err := unix.Sendto(fd, m, 0, &unix.SockaddrInet4{Addr: l}); err != nil {
			return err.Error()
		}
		time.Sleep(time.Millisecond)
	}
	return "ok"
}

func escalate(prog string) string {
	// The queue ahead, from another process (which stays nobody, so that
	// the daemon refuses those connections one by one).
	junk := exec.Command(os.Args[0], "junk", "900")
	out, err := junk.StdoutPipe()
	if err == nil {
		err = junk.Start()
	}
	if err != nil {
		return err.Error()
	}
	defer junk.Process.Kill()
	ready := make([]byte, 3)
	if _, err := io.ReadFull(out, ready); err != nil {
		return "junk: " + err.Error()
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: "@l2tpu"})
	}
	if err != nil {
		return err.Error()
	}
	// The connection is this process's, as nobody; the program it runs
	// next is root's.
	err = unix.Exec(prog, []string{prog, "escalated", strconv.Itoa(fd)}, nil)
	return err.Error()
}

func escalated(fd int) string {
	if os.Geteuid() != 0 {
		return fmt.Sprintf("not set-user-ID root: euid %d", os.Geteuid())
	}
	if _, err := unix.Write(fd, []byte("{\"op\":\"list\"}\n")); err != nil {
		return err.Error()
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10})
	var out []byte
	buf := make([]byte, 65536)
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		out = append(out, buf[:n]...)
	}
	return "answer " + string(out)
}

func squatUDP(addr string) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) {
			if err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err == nil {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		return err
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("ok")
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	n := 0
	buf := make([]byte, 2048)
	for {
		if _, _, err := pc.ReadFrom(buf); err != nil {
			break
		}
		n++
	}
	fmt.Println("received", n)
}

func squat(file, answer string) {
	ln, err := net.Listen("unix", "@l2tpu")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("ok")
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte(answer + "\n"))
		b, _ := io.ReadAll(c)
		c.Close()
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err == nil {
			f.Write(b)
			f.Close()
		}
	}
}

func hold(n int) {
	var conns []net.Conn
	for range n {
		c, err := net.Dial("unix", "@l2tpu")
		if err != nil {
			continue
		}
		conns = append(conns, c)
	}
	held, closed := 0, 0
	one := make([]byte, 1)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(one); err != nil && os.IsTimeout(err) {
			held++
		} else {
			closed++
		}
	}
	fmt.Printf("held %d closed %d\n", held, closed)
	os.Stdout.Sync()
	time.Sleep(3 * time.Second)
}

func attach(name, tun string) string {
	fd, err := unix.Open(tun, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err.Error()
	}
	defer unix.Close(fd)
	var req struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(req.name[:], name)
	for _, flags := range []uint16{unix.IFF_TAP | unix.IFF_NO_PI, unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE} {
		req.flags = flags
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req)))
		if e == 0 {
			return "ok"
		}
		if e != unix.EINVAL {
			return e.Error()
		}
	}
	return unix.EINVAL.Error()
}
