package peer

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/internal/privtest"
)

// TestMain doubles as the peer the tests judge: with PEER_CONNECT set the
// test binary connects to that abstract socket, says "ok" and waits for
// its stdin to close; and as a judge (PEER_JUDGE).
func TestMain(m *testing.M) {
	if name := os.Getenv("PEER_CONNECT"); name != "" {
		c, err := net.Dial("unix", name)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("ok")
		bufio.NewReader(os.Stdin).ReadString('\n')
		c.Close()
		os.Exit(0)
	}
	if name := os.Getenv("PEER_JUDGE"); name != "" {
		judge(name)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// judge listens on name and prints NetAdmin's verdict on every peer.
func judge(name string) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("ready")
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		p, err := Of(c)
		if err != nil {
			fmt.Println("error", err)
		} else {
			ok, why, err := p.NetAdmin()
			if err != nil {
				why = err.Error()
			}
			fmt.Println(ok, why)
			p.Close()
		}
		c.Close()
	}
}

// connect runs the test binary under wrap (a command prefix such as
// setpriv) as a peer of a fresh listener and returns what Of says of it,
// the peer's PID and a function that ends the peer.
func connect(t *testing.T, wrap ...string) (*Process, int, func()) {
	t.Helper()
	name := fmt.Sprintf("@l2tpu-peer-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	self, _ := os.Executable()
	args := append(append([]string{}, wrap...), self)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "PEER_CONNECT="+name)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	end := func() { once.Do(func() { in.Close(); cmd.Wait() }) }
	t.Cleanup(end)
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ok" {
		t.Fatalf("%v: %q", args, line)
	}
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p, err := Of(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, cmd.Process.Pid, end
}

// The judgements the daemon and the CLI rely on, each with its control: a
// root peer with CAP_NET_ADMIN passes; the same binary without the
// capability, or as root of a user namespace of its own, does not; and a
// peer that has exited is never judged by whatever process has its PID.
func TestNetAdmin(t *testing.T) {
	privtest.Require(t)
	privtest.RequireCommand(t, "setpriv", "util-linux")
	privtest.RequireCommand(t, "unshare", "util-linux")
	for _, tc := range []struct {
		name string
		wrap []string
		ok   bool
		why  string
	}{
		{"root", nil, true, ""},
		{"root without capabilities", []string{"setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"}, false, "lacks CAP_NET_ADMIN"},
		{"root with only CAP_NET_ADMIN", []string{"setpriv", "--inh-caps=-all", "--bounding-set=-all,+net_admin", "--"}, true, ""},
		{"root of its own user namespace", []string{"unshare", "--user", "--map-root-user", "--"}, false, "user namespace"},
		{"nobody", []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"}, false, "lacks CAP_NET_ADMIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, pid, end := connect(t, tc.wrap...)
			defer end()
			if p.PID() != pid {
				t.Errorf("PID %d, want %d", p.PID(), pid)
			}
			ok, why, err := p.NetAdmin()
			if err != nil || ok != tc.ok || !strings.Contains(why, tc.why) {
				t.Fatalf("NetAdmin = %v, %q, %v; want %v, %q", ok, why, err, tc.ok, tc.why)
			}
		})
	}
}

// The user-namespace check where the caller may not look into the peer's
// user namespace (it may not ptrace it): a judge running as nobody, as a
// member of the daemon's group does, judges root peers.
func TestNetAdminUnprivilegedCaller(t *testing.T) {
	privtest.Require(t)
	privtest.RequireCommand(t, "setpriv", "util-linux")
	// nobody may not run it from the build directory (0700).
	dir, err := os.MkdirTemp("", "l2tpu-peer")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "peer.test")
	if b, err := os.ReadFile(os.Args[0]); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatal("copy the test binary:", err)
	}
	name := fmt.Sprintf("@l2tpu-peer-judge-%d", os.Getpid())
	judge := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", bin)
	judge.Env = append(os.Environ(), "PEER_JUDGE="+name)
	out, _ := judge.StdoutPipe()
	if err := judge.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { judge.Process.Kill(); judge.Wait() }()
	verdicts := bufio.NewReader(out)
	if l, _ := verdicts.ReadString('\n'); l != "ready\n" {
		t.Fatalf("judge: %q", l)
	}
	for _, tc := range []struct {
		wrap []string
		want string
	}{
		{nil, "true "},
		{[]string{"unshare", "--user", "--map-root-user", "--"}, "false it runs in another user namespace"},
		{[]string{"setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"}, "false it lacks CAP_NET_ADMIN"},
	} {
		args := append(append([]string{}, tc.wrap...), os.Args[0])
		peer := exec.Command(args[0], args[1:]...)
		peer.Env = append(os.Environ(), "PEER_CONNECT="+name)
		in, _ := peer.StdinPipe()
		if err := peer.Start(); err != nil {
			t.Fatal(err)
		}
		l, _ := verdicts.ReadString('\n')
		in.Close()
		peer.Wait()
		if strings.TrimSuffix(l, "\n") != tc.want {
			t.Errorf("%v: judged %q, want %q", tc.wrap, l, tc.want)
		}
	}
}

// A peer that exits is gone: its PID, taken by another process, does not
// answer for it.
func TestGone(t *testing.T) {
	privtest.Require(t)
	p, _, end := connect(t)
	if ok, _, err := p.NetAdmin(); !ok || err != nil {
		t.Fatalf("alive: %v %v", ok, err)
	}
	end()
	if _, _, err := p.NetAdmin(); !errors.Is(err, ErrGone) {
		t.Fatalf("after exit: %v", err)
	}
	if !p.Wait(time.Second) {
		t.Fatal("Wait: not exited")
	}
}

func TestOpen(t *testing.T) {
	p, pid, end := connect(t)
	defer end()
	st, err := p.Start()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Open(pid, st)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	if _, err := Open(pid, st+1); !errors.Is(err, ErrGone) {
		t.Fatalf("another start time: %v", err)
	}
}

func TestStartOf(t *testing.T) {
	for in, want := range map[string]uint64{
		"1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 42 100 200":         42,
		"7 (a) b) (c) R 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 99 100 200 300": 99,
	} {
		if got, err := StartOf([]byte(in)); err != nil || got != want {
			t.Errorf("%q: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 0"} {
		if _, err := StartOf([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
