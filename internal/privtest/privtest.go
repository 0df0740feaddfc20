// Package privtest holds helpers for tests that need root: they skip with a
// reason when not root, and fail instead when L2TPU_REQUIRE_PRIV=1 (CI), so
// a run cannot pass by skipping. It also makes uniquely named network
// namespaces and veth pairs that are always cleaned up.
package privtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/internal/netns"
)

// Require skips (or, with L2TPU_REQUIRE_PRIV=1, fails) unless the test can
// create namespaces and TAP devices.
func Require(t testing.TB) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "needs root (network namespaces, TAP devices, raw sockets)"
	default:
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			why = "needs /dev/net/tun"
		} else if _, err := exec.LookPath("ip"); err != nil {
			why = "needs the ip command (iproute2)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("L2TPU_REQUIRE_PRIV") == "1" {
		t.Fatalf("L2TPU_REQUIRE_PRIV=1 but this test %s", why)
	}
	t.Skip(why)
}

// RequireCommand skips (or, with L2TPU_REQUIRE_PRIV=1, fails) unless the
// command name is installed; pkg is the Debian package that has it
// (.ci/deps.sh installs it).
func RequireCommand(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	why := fmt.Sprintf("needs %s (Debian package %s; .ci/deps.sh installs it)", name, pkg)
	if os.Getenv("L2TPU_REQUIRE_PRIV") == "1" {
		t.Fatalf("L2TPU_REQUIRE_PRIV=1 but this test %s", why)
	}
	t.Skip(why)
}

var seq atomic.Uint32

// Prefix returns a short prefix unique to this process and call, for
// namespace and link names (interface names are at most 15 bytes).
func Prefix() string {
	return fmt.Sprintf("lt%x%x", os.Getpid()&0xfff, seq.Add(1)&0xff)
}

// Run runs a command and fails the test with its output on error.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NS is a network namespace made for one test.
type NS struct {
	Name string
}

// Path is the namespace's bind mount, for netns.Do and dataplane options.
func (n *NS) Path() string { return netns.Path(n.Name) }

// NewNS creates a namespace with loopback up, deleted when the test ends.
func NewNS(t testing.TB, name string) *NS {
	t.Helper()
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n := &NS{Name: name}
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// Run runs a command inside the namespace.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Try runs a command inside the namespace and returns its output and error.
func (n *NS) Try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// Veth joins two namespaces with a veth pair (aName in a, bName in b), up.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	Run(t, "ip", "link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.Run(t, "ip", "link", "set", aName, "up")
	b.Run(t, "ip", "link", "set", bName, "up")
	// Until the kernel's linkwatch has seen the carrier (it batches events,
	// up to a second apart on a busy host), the link transmits nothing:
	// a test's first packets would wait that long behind ARP.
	for _, e := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		Eventually(t, 5*time.Second, func() error {
			out, err := e.ns.Try("ip", "-o", "link", "show", "dev", e.name)
			if err != nil {
				return err
			}
			if !strings.Contains(out, " state UP ") {
				return fmt.Errorf("veth %s not up after 5 s: %s", e.name, out)
			}
			return nil
		})
	}
}

// Eventually retries f until it returns nil or the deadline passes; it is
// for waiting on the kernel (DAD, link up), not for timing assertions.
func Eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ifindex(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifi.Index, nil
}

// pingRecv finds how many answers ping counted (iputils: "3 received";
// busybox: "3 packets received").
var pingRecv = regexp.MustCompile(`(\d+) (?:packets )?received`)

// ParsePing returns how many echo replies ping's summary counts.
func ParsePing(out string) int {
	if m := pingRecv.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// Ping sends count echo requests 0.2 s apart from the namespace (extra
// options first) and returns how many were answered, and ping's output.
func (n *NS) Ping(addr string, count int, extra ...string) (int, string) {
	args := append([]string{"ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2"}, extra...)
	out, _ := n.Try(append(args, addr)...)
	return ParsePing(out), out
}
