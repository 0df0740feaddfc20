package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l2tpu/l2tpu/internal/privtest"
)

// modprobeDir is a directory holding `ip` and `modprobe`, symlinks to the
// binary, to put first on PATH (what `make install-shims` installs).
func modprobeDir(t *testing.T) (dir string, env []string) {
	dir, env = shimDir(t)
	if err := os.Symlink(binary(t), filepath.Join(dir, "modprobe")); err != nil {
		t.Fatal(err)
	}
	return dir, env
}

// systemModprobe is the host's modprobe, which the shim hands over to.
func systemModprobe(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("modprobe")
	if err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/modprobe", "/sbin/modprobe"} { // a PATH without sbin
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("no modprobe on the host (.ci/deps.sh installs kmod): %v", err)
	return ""
}

// TestModprobeShim runs the binary as modprobe: the kernel's L2TPv3 modules
// are answered (success, a line on stderr with -v only); every other
// invocation is the system's modprobe byte for byte, status included.
func TestModprobeShim(t *testing.T) {
	privtest.Require(t)
	sys := systemModprobe(t)
	dir, env := modprobeDir(t)
	mp := filepath.Join(dir, "modprobe")
	// The host has no L2TP modules (the reason for the shim): the system's
	// modprobe fails on each answered call, the shim succeeds.
	hostHas := runCmd(t, nil, sys, "-n", "l2tp_eth").code == 0
	for _, c := range []struct {
		argv    []string
		verbose []string // modules named on stderr
	}{
		{argv: []string{"l2tp_eth"}},
		{argv: []string{"-q", "l2tp_eth"}},
		{argv: []string{"l2tp-eth"}},
		{argv: []string{"l2tp_netlink"}},
		{argv: []string{"l2tp_ip6"}},
		{argv: []string{"-a", "l2tp_core", "l2tp_netlink", "l2tp_eth", "l2tp_ip", "l2tp_ip6"}},
		{argv: []string{"--all", "--quiet", "l2tp_ip", "l2tp_eth"}},
		{argv: []string{"-r", "l2tp_eth"}},
		{argv: []string{"-rq", "l2tp_eth", "l2tp_ip"}},
		{argv: []string{"--remove", "-n", "l2tp_core"}},
		{argv: []string{"-v", "l2tp_eth"}, verbose: []string{"l2tp_eth"}},
		{argv: []string{"l2tp_eth", "-v"}, verbose: []string{"l2tp_eth"}}, // getopt permutes
		{argv: []string{"-nva", "l2tp_ip", "l2tp_ip6"}, verbose: []string{"l2tp_ip", "l2tp_ip6"}},
		{argv: []string{"--dry-run", "--verbose", "--", "l2tp_eth"}, verbose: []string{"l2tp_eth"}},
	} {
		r := runCmd(t, env, append([]string{mp}, c.argv...)...)
		if r.code != 0 || r.out != "" {
			t.Errorf("modprobe %v: %+v, want success", c.argv, r)
			continue
		}
		lines := strings.Split(strings.TrimSuffix(r.err, "\n"), "\n")
		if len(c.verbose) == 0 && r.err != "" || len(c.verbose) > 0 && len(lines) != len(c.verbose) {
			t.Errorf("modprobe %v: stderr %q, want a line for each of %v", c.argv, r.err, c.verbose)
		}
		for i, m := range c.verbose {
			if i < len(lines) && !strings.HasPrefix(lines[i], "modprobe: "+m+": ") {
				t.Errorf("modprobe %v: line %q, want one for %s", c.argv, lines[i], m)
			}
		}
		if !hostHas && !strings.Contains(strings.Join(c.argv, " "), "-r") {
			if s := runCmd(t, nil, append([]string{sys}, c.argv...)...); s.code == 0 {
				t.Errorf("system modprobe %v succeeded on a host without the modules: %+v", c.argv, s)
			}
		}
	}
	// Handed over: byte for byte the system's, success and failure.
	for _, argv := range [][]string{
		{},
		{"l2tp_ppp"}, // L2TPv2's PPP: not l2tpu's
		{"-q", "l2tp_ppp"},
		{"-a", "l2tp_eth", "l2tp_ppp"},
		{"nosuchmodule"},
		{"l2tp_eth", "param=1"}, // module parameters
		{"-c"},
		{"--show-depends", "l2tp_eth"},
		{"-V"},
		{"--version"},
		{"-h"},
		{"--rem", "l2tp_eth"}, // an abbreviation is modprobe's to judge
		{"-C", "/dev/null", "l2tp_eth"},
		{"-Z", "l2tp_eth"},
		{"-"},
	} {
		// Both run as a script runs them: by the name modprobe.
		got := runAs(t, env, mp, append([]string{"modprobe"}, argv...)...)
		want := runAs(t, nil, sys, append([]string{"modprobe"}, argv...)...)
		if got != want {
			t.Errorf("modprobe %v: shim %+v, system %+v", argv, got, want)
		}
	}
	// Another copy of the shim further on PATH hands on to the system's;
	// $L2TPU_MODPROBE naming the shim is refused, naming kmod itself (the
	// file modprobe links to) runs, and /bin/sh is refused for root.
	dir2 := t.TempDir()
	if b, err := os.ReadFile(binary(t)); err != nil || os.WriteFile(filepath.Join(dir2, "modprobe"), b, 0o755) != nil {
		t.Fatal(err)
	}
	want := runCmd(t, nil, sys, "l2tp_ppp")
	if got := runCmd(t, []string{"PATH=" + dir + ":" + dir2 + ":" + os.Getenv("PATH")}, mp, "l2tp_ppp"); got != want {
		t.Errorf("two shims on PATH: %+v, want %+v", got, want)
	}
	if r := runCmd(t, []string{"L2TPU_MODPROBE=" + binary(t)}, mp, "l2tp_ppp"); r.code != 1 || !strings.Contains(r.err, "is the shim itself") {
		t.Errorf("L2TPU_MODPROBE naming the shim: %+v", r)
	}
	sysFile, err := filepath.EvalSymlinks(sys)
	if err != nil {
		t.Fatal(err)
	}
	if got := runCmd(t, []string{"L2TPU_MODPROBE=" + sysFile}, mp, "l2tp_ppp"); got != want {
		t.Errorf("L2TPU_MODPROBE=%s: %+v, want %+v", sysFile, got, want)
	}
	shell, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, []string{"L2TPU_MODPROBE=" + shell}, mp, "l2tp_ppp"); r.code != 1 || !strings.Contains(r.err, "named modprobe or kmod") {
		t.Errorf("L2TPU_MODPROBE=%s as root: %+v", shell, r)
	}
	// For root, a modprobe on PATH that another user may change is passed
	// over (here: the only one, so none is found).
	evil := t.TempDir()
	os.Chmod(evil, 0o755)
	if err := os.WriteFile(filepath.Join(evil, "modprobe"), []byte("#!/bin/sh\necho ran\n"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(evil, "modprobe"), 0o777)
	if r := runCmd(t, []string{"PATH=" + dir + ":" + evil}, mp, "l2tp_ppp"); r.code != 1 || strings.Contains(r.out, "ran") || !strings.Contains(r.err, "install kmod") {
		t.Errorf("a world-writable modprobe on root's PATH: %+v", r)
	}
	os.Chmod(filepath.Join(evil, "modprobe"), 0o755) // the positive control: root's own runs
	if r := runCmd(t, []string{"PATH=" + dir + ":" + evil}, mp, "l2tp_ppp"); r.code != 0 || r.out != "ran\n" {
		t.Errorf("a root-owned modprobe on PATH: %+v", r)
	}
	// Nor through a directory another user may write: a link there to a
	// root-owned program (env, which would run the user's ./l2tp_ppp), a
	// relative PATH entry.
	users := t.TempDir()
	os.Chmod(users, 0o755)
	if err := os.Symlink("/usr/bin/env", filepath.Join(users, "modprobe")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(users, "l2tp_ppp"), []byte("#!/bin/sh\necho payload\n"), 0o755)
	os.Lchown(filepath.Join(users, "modprobe"), 65534, 65534)
	os.Chown(users, 65534, 65534)
	for _, path := range []string{dir + ":" + users, dir + ":."} {
		cmd := []string{"PATH=" + path}
		r := runAs(t, cmd, mp, "modprobe", "l2tp_ppp")
		if strings.Contains(r.out, "payload") || r.code != 1 || !strings.Contains(r.err, "install kmod") {
			t.Errorf("PATH=%s: %+v", path, r)
		}
	}
	os.Chown(users, 0, 0) // the positive control: root's link in root's directory runs
	os.Lchown(filepath.Join(users, "modprobe"), 0, 0)
	if r := runCmd(t, []string{"PATH=" + dir + ":" + users}, mp, "l2tp_ppp"); r.out == "" {
		t.Errorf("the link in a root-only directory did not run: %+v", r)
	}
	// MODPROBE_OPTIONS are kmod's: handed over even for an L2TP module.
	mo := []string{"MODPROBE_OPTIONS=-C /dev/null"}
	if got, want := runAs(t, append(env, mo...), mp, "modprobe", "l2tp_eth"), runAs(t, mo, sys, "modprobe", "l2tp_eth"); got != want {
		t.Errorf("MODPROBE_OPTIONS: shim %+v, system %+v", got, want)
	}
}

// TestModprobeThenIPL2TP is what Gentoo's netifrc and VyOS do, unchanged:
// modprobe the modules, then set up, use and tear down a pseudowire with
// ip l2tp, under set -e, through the two shims. Without the modprobe shim
// (the positive control) the script stops at modprobe on this host.
func TestModprobeThenIPL2TP(t *testing.T) {
	privtest.Require(t)
	systemModprobe(t)
	ns := cliNS(t)
	dir, env := modprobeDir(t)
	script := filepath.Join(t.TempDir(), "pw.sh")
	os.WriteFile(script, []byte(`set -e
# netifrc's net/l2tp.sh
modprobe l2tp_eth
# VyOS's interfaces_l2tpv3.py, for each module not under /sys/module
for m in l2tp_eth l2tp_netlink l2tp_ip l2tp_ip6; do
	[ -d /sys/module/$m ] || modprobe $m
done
ip l2tp add tunnel tunnel_id 40 peer_tunnel_id 41 encap udp local 192.0.2.1 remote 192.0.2.2 udp_sport 5040 udp_dport 5041
ip l2tp add session name mp0 tunnel_id 40 session_id 50 peer_session_id 51
ip link set mp0 up mtu 1400
ip addr add 198.51.100.1/30 dev mp0
ip -j l2tp show session
ip -o link show mp0
ip l2tp del session tunnel_id 40 session_id 50
ip l2tp del tunnel tunnel_id 40
modprobe -r l2tp_eth l2tp_netlink || modprobe -r -a l2tp_eth l2tp_netlink
echo done
`), 0o644)
	run := func(env []string) result {
		return runCmd(t, nil, append([]string{"ip", "netns", "exec", ns.Name, "env"}, append(env, "sh", script)...)...)
	}
	r := run(env)
	if r.code != 0 || !strings.Contains(r.out, `"session_id":50`) || !strings.Contains(r.out, "mtu 1400") || !strings.HasSuffix(r.out, "done\n") {
		t.Fatalf("through the shims: %+v", r)
	}
	if _, err := ns.Try("ip", "link", "show", "mp0"); err == nil {
		t.Error("mp0 still there after ip l2tp del")
	}
	if runCmd(t, nil, systemModprobe(t), "-n", "l2tp_eth").code == 0 {
		return // a host with the modules has nothing to show without the shim
	}
	os.Remove(filepath.Join(dir, "modprobe"))
	if r := run(env); r.code == 0 || strings.Contains(r.out, "done") || !strings.Contains(r.err, "l2tp_eth") {
		t.Errorf("without the modprobe shim: %+v, want the script stopped at modprobe", r)
	}
}
