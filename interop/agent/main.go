// Command agent is /init of the interop suite's guest VM: it mounts the
// kernel file systems, loads the modules shipped in /lib/modules (in the
// order listed in /lib/modules/order), brings up eth0 with the addresses
// from the kernel command line (l2tpu.addr=CIDR,...), and serves the host
// over TCP on port 7777: one JSON request per connection.
//
// It exists so that the guest needs no shell tricks: the kernel side is
// still configured with the real iproute2 `ip l2tp`, run through "run".
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Request is what the host asks.
type Request struct {
	Op      string `json:"op"`                // run, inject, sink, send
	Cmd     string `json:"cmd,omitempty"`     // run: a /bin/sh -c script
	Iface   string `json:"iface,omitempty"`   // inject
	Frame   string `json:"frame,omitempty"`   // inject: hex Ethernet frame
	Addr    string `json:"addr,omitempty"`    // sink: listen address; send: peer
	Bytes   int    `json:"bytes,omitempty"`   // send
	Timeout int    `json:"timeout,omitempty"` // seconds
	// UID, when set, runs the command as that user (and group), without
	// capabilities and supplementary groups; its stderr is then apart.
	UID *int `json:"uid,omitempty"`
}

// Response is the answer.
type Response struct {
	RC    int    `json:"rc"`
	Out   string `json:"out,omitempty"`
	Bytes int64  `json:"bytes,omitempty"`
	Err   string `json:"err,omitempty"`
	// Stderr is the command's stderr when run with UID (Out its stdout).
	Stderr string `json:"stderr,omitempty"`
}

func main() {
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, "agent: "+f+"\n", a...) }
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"}, {"debugfs", "/sys/kernel/debug", "debugfs"},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			logf("mount %s: %v", m.dst, err)
		}
	}
	os.Setenv("PATH", "/sbin:/bin:/usr/sbin:/usr/bin")
	order, _ := os.ReadFile("/lib/modules/order")
	for _, name := range strings.Fields(string(order)) {
		f, err := os.Open(filepath.Join("/lib/modules", name))
		if err != nil {
			logf("module %s: %v", name, err)
			continue
		}
		if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
			logf("insmod %s: %v", name, err)
		}
		f.Close()
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	var addrs []string
	for _, w := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(w, "l2tpu.addr="); ok {
			addrs = strings.Split(v, ",")
		}
	}
	script := "ip() { /sbin/ip \"$@\"; }; ip link set lo up; ip link set eth0 up"
	for _, a := range addrs {
		script += "; ip addr add " + a + " dev eth0"
		if strings.Contains(a, ":") {
			script += " nodad"
		}
	}
	if out, err := exec.Command("/bin/sh", "-c", script).CombinedOutput(); err != nil {
		logf("network: %v %s", err, out)
	}
	ln, err := net.Listen("tcp", ":7777")
	if err != nil {
		logf("listen: %v", err)
		select {}
	}
	fmt.Println("L2TPU-AGENT-READY")
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go serve(c)
	}
}

func serve(c net.Conn) {
	defer c.Close()
	var req Request
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(Response{RC: -1, Err: err.Error()})
		return
	}
	timeout := time.Duration(req.Timeout) * time.Second
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	var resp Response
	switch req.Op {
	case "run":
		cmd := exec.Command("/bin/sh", "-c", req.Cmd)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if req.UID != nil {
			id := uint32(*req.UID)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id, Gid: id, Groups: []uint32{}}}
			cmd.Stderr = &errb
			cmd.Dir = "/"
		}
		cmd.Start()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			resp.RC = cmd.ProcessState.ExitCode()
			if err != nil && resp.RC == 0 {
				resp.RC = -1
			}
		case <-time.After(timeout):
			cmd.Process.Kill()
			<-done
			resp.RC, resp.Err = -1, "timeout"
		}
		resp.Out, resp.Stderr = out.String(), errb.String()
	case "inject":
		resp = inject(req.Iface, req.Frame)
	case "sink": // accept one TCP connection, count its bytes
		ln, err := net.Listen("tcp", req.Addr)
		if err != nil {
			resp = Response{RC: -1, Err: err.Error()}
			break
		}
		json.NewEncoder(c).Encode(Response{}) // listening
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout))
		conn, err := ln.Accept()
		ln.Close()
		if err != nil {
			resp = Response{RC: -1, Err: err.Error()}
			break
		}
		conn.SetDeadline(time.Now().Add(timeout))
		resp.Bytes, _ = io.Copy(io.Discard, conn)
		conn.Close()
	case "send": // connect and send Bytes zero bytes
		conn, err := net.DialTimeout("tcp", req.Addr, timeout)
		if err != nil {
			resp = Response{RC: -1, Err: err.Error()}
			break
		}
		conn.SetDeadline(time.Now().Add(timeout))
		n, err := conn.Write(make([]byte, req.Bytes))
		conn.Close()
		resp.Bytes = int64(n)
		if err != nil {
			resp.RC, resp.Err = -1, err.Error()
		}
	default:
		resp = Response{RC: -1, Err: "unknown op " + req.Op}
	}
	json.NewEncoder(c).Encode(resp)
}

// inject makes the kernel transmit a raw Ethernet frame on iface.
func inject(iface, frameHex string) Response {
	frame, err := hex.DecodeString(frameHex)
	if err != nil {
		return Response{RC: -1, Err: err.Error()}
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return Response{RC: -1, Err: err.Error()}
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return Response{RC: -1, Err: err.Error()}
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}); err != nil {
		return Response{RC: -1, Err: err.Error()}
	}
	return Response{}
}
