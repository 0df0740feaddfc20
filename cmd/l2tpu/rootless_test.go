package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l2tpu/l2tpu/internal/privtest"
)

// rootlessSh runs script as the unprivileged user nobody in new user,
// network and mount namespaces (`unshare -Urnm`: root there, nobody here),
// with a /dev/net/tun that user may open bound in, as rootless container
// runtimes do. It skips (fails under L2TPU_REQUIRE_PRIV=1) where the
// kernel refuses unprivileged user namespaces.
func rootlessSh(t *testing.T, env []string, script string) (string, error) {
	t.Helper()
	pre := []string{"setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--"}
	if out, err := exec.Command(pre[0], append(pre[1:], "unshare", "-Urnm", "true")...).CombinedOutput(); err != nil {
		why := "unprivileged user namespaces are disabled here: " + strings.TrimSpace(string(out))
		if os.Getenv("L2TPU_REQUIRE_PRIV") == "1" {
			t.Fatalf("L2TPU_REQUIRE_PRIV=1 but %s", why)
		}
		t.Skip(why)
	}
	dir := openDir(t)
	tun := filepath.Join(dir, "tun")
	privtest.Run(t, "mknod", "-m", "0666", tun, "c", "10", "200")
	cmd := exec.Command(pre[0], append(pre[1:], "unshare", "-Urnm", "sh", "-ec",
		"mount --bind "+tun+" /dev/net/tun\n"+script)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// openDir is a temporary directory that other users can reach (t.TempDir's
// parent is private).
func openDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "l2tpu-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	return dir
}

// TestRootless: an unprivileged user in its own user namespace (a rootless
// container) runs l2tpu: the runtime files go to $XDG_RUNTIME_DIR/l2tpu, or
// a private directory of its own, since /run/l2tpu is not its to write.
func TestRootless(t *testing.T) {
	privtest.Require(t)
	bin := binary(t)
	script := `ip link set lo up
ip link add d0 type veth peer name d1
ip link set d0 up
ip addr add 192.0.2.1/24 dev d0
if [ -w /run/l2tpu ]; then echo "control: /run/l2tpu is writable"; exit 1; fi
L=` + bin + `
$L add tunnel tunnel_id 1 peer_tunnel_id 2 local 192.0.2.1 remote 192.0.2.2 udp_sport 1701 udp_dport 1701
$L add session tunnel_id 1 session_id 3 peer_session_id 4 name pwr0
ip -o link show pwr0
$L show session
ls "$RUNDIR"
$L daemon stop
echo stopped
`
	xdg := openDir(t)
	privtest.Run(t, "chown", "nobody:nogroup", xdg)
	out, err := rootlessSh(t, []string{"XDG_RUNTIME_DIR=" + xdg, "RUNDIR=" + filepath.Join(xdg, "l2tpu")}, script)
	if err != nil || !strings.Contains(out, "Session 3 in tunnel 1") || !strings.Contains(out, "pwr0:") ||
		!strings.Contains(out, ".pid") || !strings.HasSuffix(out, "stopped\n") {
		t.Fatalf("rootless with XDG_RUNTIME_DIR: %v\n%s", err, out)
	}
	// Without XDG_RUNTIME_DIR: the user's private directory under /tmp,
	// named by its uid outside (nobody's).
	priv := filepath.Join(os.TempDir(), "l2tpu-65534")
	t.Cleanup(func() { os.RemoveAll(priv) })
	out, err = rootlessSh(t, []string{"RUNDIR=" + priv}, script)
	if err != nil || !strings.Contains(out, "Session 3 in tunnel 1") || !strings.Contains(out, ".pid") {
		t.Fatalf("rootless without XDG_RUNTIME_DIR: %v\n%s", err, out)
	}
	if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("private runtime directory: %v %v", fi, err)
	}
}

// TestNeedRaw: without CAP_NET_RAW an IP-encap tunnel fails with a message
// that says so (the kernel's needs only CAP_NET_ADMIN); with it, it works.
func TestNeedRaw(t *testing.T) {
	privtest.Require(t)
	ns := cliNS(t)
	args := []string{"netns", "exec", ns.Name, "setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--", binary(t),
		"add", "tunnel", "tunnel_id", "5", "peer_tunnel_id", "6", "local", "192.0.2.1", "remote", "192.0.2.2", "encap", "ip"}
	r := runCmd(t, nil, append([]string{"ip"}, args...)...)
	want := "l2tpu: IP encapsulation needs CAP_NET_RAW (a raw IP socket for protocol 115): give the daemon CAP_NET_RAW, or use encap udp\nRTNETLINK answers: Operation not permitted\n"
	if r.code != 2 || r.err != want {
		t.Fatalf("without CAP_NET_RAW: %+v, want %q", r, want)
	}
	stopDaemon(t, ns) // it was started without CAP_NET_RAW
	if _, errs, code := l2tpu(t, ns, args[10:]...); code != 0 {
		t.Fatalf("with CAP_NET_RAW: %s", errs)
	}
}

// TestRootNoFallback: root of the machine keeps its state in /run/l2tpu or
// nowhere: with /run/l2tpu read-only it fails and says so, and writes
// nothing into the $XDG_RUNTIME_DIR it was given (another user's, say).
func TestRootNoFallback(t *testing.T) {
	privtest.Require(t)
	ns := cliNS(t)
	xdg := openDir(t)
	script := `mount -t tmpfs -o ro l2tpu-ro /run/l2tpu
exec ip netns exec ` + ns.Name + ` "$BIN" add tunnel tunnel_id 1 peer_tunnel_id 2 local 192.0.2.1 remote 192.0.2.2 udp_sport 1701 udp_dport 1701`
	r := runCmd(t, []string{"BIN=" + binary(t), "XDG_RUNTIME_DIR=" + xdg}, "unshare", "-m", "--propagation", "private", "sh", "-ec", script)
	if r.code == 0 || !strings.Contains(r.err, "no usable runtime directory: /run/l2tpu") {
		t.Fatalf("root with /run/l2tpu read-only: %+v", r)
	}
	if ents, _ := os.ReadDir(xdg); len(ents) != 0 {
		t.Fatalf("root wrote into $XDG_RUNTIME_DIR: %v", ents)
	}
	// The positive control: the same command with /run/l2tpu writable.
	if _, errs, code := l2tpu(t, ns, "add", "tunnel", "tunnel_id", "1", "peer_tunnel_id", "2", "local", "192.0.2.1", "remote", "192.0.2.2", "udp_sport", "1701", "udp_dport", "1701"); code != 0 {
		t.Fatalf("with /run/l2tpu writable: %s", errs)
	}
}

// TestRootlessShims: in an unprivileged user namespace (root there, whose
// host files show as owned by an unmapped user) the shims still hand over
// to the system's ip and modprobe, which no one there can change.
func TestRootlessShims(t *testing.T) {
	privtest.Require(t)
	systemModprobe(t)
	dir := openDir(t)
	for _, name := range []string{"ip", "modprobe"} {
		if err := os.Symlink(binary(t), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	script := `ip link set lo up
sys=$(ip -br link)
shim=$(PATH=` + dir + `:$PATH ip -br link)
[ "$sys" = "$shim" ] || { echo "ip -br link: system '$sys', shim '$shim'"; exit 1; }
PATH=` + dir + `:$PATH modprobe l2tp_eth
PATH=` + dir + `:$PATH modprobe -V | grep -q kmod || { echo "modprobe -V not handed over"; exit 1; }
echo ok
`
	out, err := rootlessSh(t, nil, script)
	if err != nil || !strings.HasSuffix(out, "ok\n") {
		t.Fatalf("%v\n%s", err, out)
	}
}
