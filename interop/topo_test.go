package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/privtest"
	"github.com/l2tpu/l2tpu/interop/vm"
)

// Topology (all addresses documentation ranges, all in namespaces made here):
//
//	VM eth0 192.0.2.2 / 2001:db8:a::2 ── TAP ── ns U (l2tpu) 192.0.2.1 / 2001:db8:a::1
//	ns U 198.51.100.1 / 2001:db8:b::1 ── veth ── ns Q (QEMU l2tpv3) 198.51.100.2 / 2001:db8:b::2
//	pseudowire: kernel 203.0.113.1 ↔ l2tpu 203.0.113.2; QEMU 203.0.113.3 ↔ l2tpu 203.0.113.2
type topo struct {
	u, q    *privtest.NS
	tap     string
	vm      *vm.VM
	bin     string // the l2tpu binary
	workDir string
}

func buildBinaries(t *testing.T, dir string) (agent, l2tpu string) {
	t.Helper()
	agent, l2tpu = filepath.Join(dir, "agent"), filepath.Join(dir, "l2tpu")
	for _, b := range [][2]string{{agent, "./agent"}, {l2tpu, "../cmd/l2tpu"}} {
		cmd := exec.Command("go", "build", "-o", b[0], b[1])
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	return agent, l2tpu
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	agent, bin := buildBinaries(t, dir)
	t0 := time.Now()
	img, err := vm.Build(vm.DefaultCache(), agent)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s, image ready in %s", img.Release, time.Since(t0).Round(time.Millisecond))
	p := privtest.Prefix()
	tp := &topo{u: privtest.NewNS(t, p+"u"), q: privtest.NewNS(t, p+"q"), tap: p + "tap", bin: bin, workDir: dir}
	t.Cleanup(func() { daemon.StopInNamespace(tp.u.Path()) })
	privtest.Veth(t, tp.u, p+"vu", tp.q, p+"vq")
	tp.u.Run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", p+"vu")
	tp.u.Run(t, "ip", "addr", "add", "2001:db8:b::1/64", "dev", p+"vu", "nodad")
	tp.q.Run(t, "ip", "addr", "add", "198.51.100.2/24", "dev", p+"vq")
	tp.q.Run(t, "ip", "addr", "add", "2001:db8:b::2/64", "dev", p+"vq", "nodad")
	tp.vm, err = vm.Start(img, vm.Config{NS: tp.u.Name, TAP: tp.tap, MAC: "52:54:00:6b:70:01",
		Addrs: []string{"192.0.2.2/24", "2001:db8:a::2/64"}, TAPAddrs: []string{"192.0.2.1/24", "2001:db8:a::1/64"},
		Accel: os.Getenv("L2TPU_INTEROP_ACCEL"), RunDir: filepath.Join(dir, "vm")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.vm.Stop)
	t.Logf("guest up in %s (accel %s)", tp.vm.Boot.Round(time.Millisecond), tp.vm.Accel)
	if _, err := tp.vm.Run("mount | grep -q debugfs || mount -t debugfs none /sys/kernel/debug"); err != nil {
		t.Fatal(err)
	}
	return tp
}

// l2tpu runs the l2tpu binary in ns U.
func (tp *topo) l2tpu(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", tp.u.Name, tp.l2tpuBin()}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("l2tpu %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (tp *topo) l2tpuBin() string { return tp.bin }

// restartDaemon replaces ns U's daemon with one started with args.
func (tp *topo) restartDaemon(t *testing.T, args ...string) {
	t.Helper()
	daemon.StopInNamespace(tp.u.Path())
	err := netns.Do(tp.u.Path(), func() error {
		return daemon.Start(tp.bin, filepath.Join(tp.workDir, "daemon.log"), args...)
	})
	if err != nil {
		t.Fatalf("daemon %v: %v", args, err)
	}
}

// Daemon flags: every fast path on (multi-queue TAPs too), or the
// byte-exact path.
var (
	fastFlags  = []string{"-tap-queues", "2"}
	exactFlags = []string{"-no-gso"}
)

// sessionStats reads l2tpu's counters of its only session.
func (tp *topo) sessionStats() (dataplane.Stats, bool, error) {
	out, err := tp.l2tpu("-s", "-j", "show", "session")
	if err != nil {
		return dataplane.Stats{}, false, err
	}
	var ss []struct {
		SendSeq *struct{}       `json:"send_seq"`
		Stats   dataplane.Stats `json:"stats"`
	}
	if err := json.Unmarshal([]byte(out), &ss); err != nil || len(ss) != 1 {
		return dataplane.Stats{}, false, fmt.Errorf("l2tpu sessions %q: %v", out, err)
	}
	return ss[0].Stats, strings.Contains(out, `"send_seq"`), nil
}

var debugfsLine = regexp.MustCompile(`(?m)^\s+\d+/\d+ tx (\d+)/(\d+)/(\d+) rx (\d+)/(\d+)/(\d+)`)

// kstats are the kernel session's counters from debugfs:
// tx packets/bytes/errors, rx packets/bytes/errors.
type kstats [6]uint64

func (tp *topo) kernelStats() (kstats, error) {
	var k kstats
	out, err := tp.vm.Run("cat /sys/kernel/debug/l2tp/tunnels")
	if err != nil {
		return k, err
	}
	m := debugfsLine.FindStringSubmatch(out)
	if m == nil {
		return k, fmt.Errorf("no session in debugfs:\n%s", out)
	}
	for i := range k {
		k[i], _ = strconv.ParseUint(m[i+1], 10, 64)
	}
	return k, nil
}

// capture is a tcpdump on the VM's TAP in ns U.
type capture struct {
	cmd  *exec.Cmd
	file string
}

func (tp *topo) startCapture(t *testing.T, name string, iface string) *capture {
	t.Helper()
	file := filepath.Join(tp.workDir, name+".pcap")
	cmd := exec.Command("ip", "netns", "exec", tp.u.Name, "tcpdump", "-i", iface, "-U", "-n", "-s", "0", "-Z", "root",
		"-w", file, "udp or ip proto 115 or ip6 proto 115")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && !strings.Contains(errb.String(), "listening on"); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	return &capture{cmd: cmd, file: file}
}

func (c *capture) stop() string {
	time.Sleep(100 * time.Millisecond)
	c.cmd.Process.Signal(syscall.SIGINT)
	c.cmd.Wait()
	return c.file
}

// injectHost makes ns U's kernel transmit frame on iface (l2tpu reads it).
func (tp *topo) injectHost(iface string, frame []byte) error {
	return netns.Do(tp.u.Path(), func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6})
	})
}

// pings runs ping in ns U or the guest and returns the replies.
func (tp *topo) pingFromHost(addr string, n int) int {
	recv, _ := tp.u.Ping(addr, n)
	return recv
}

func (tp *topo) pingFromGuest(addr string, n int) int {
	out, _ := tp.vm.Run(fmt.Sprintf("ping -q -c %d -W 1 %s", n, addr))
	return privtest.ParsePing(out)
}

// tcpToGuest sends n bytes from ns U to the guest; tcpFromGuest the reverse.
func (tp *topo) tcpToGuest(addr string, n int) bool {
	wait, err := tp.vm.Sink(addr, 10*time.Second)
	if err != nil {
		return false
	}
	var c net.Conn
	if err := netns.Do(tp.u.Path(), func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		wait()
		return false
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(make([]byte, n))
	c.Close()
	got, err := wait()
	return err == nil && got == int64(n)
}

func (tp *topo) tcpFromGuest(listen string, n int) bool {
	var ln net.Listener
	if err := netns.Do(tp.u.Path(), func() (err error) { ln, err = net.Listen("tcp", listen); return err }); err != nil {
		return false
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var buf [65536]byte
		var total int64
		for {
			k, err := c.Read(buf[:])
			total += int64(k)
			if err != nil {
				break
			}
		}
		got <- total
	}()
	sent, err := tp.vm.Send(listen, n, 10*time.Second)
	if err != nil || sent != int64(n) {
		ln.Close()
		return false
	}
	select {
	case g := <-got:
		return g == int64(n)
	case <-time.After(12 * time.Second):
		return false
	}
}
