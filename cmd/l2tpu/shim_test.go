package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l2tpu/l2tpu/internal/privtest"
)

// result is what a command printed and its exit status.
type result struct {
	out, err string
	code     int
}

// runCmd runs argv with env added to the environment.
func runCmd(t *testing.T, env []string, argv ...string) result {
	t.Helper()
	return runAs(t, env, argv[0], argv...)
}

// runAs runs the program at path with argv (argv[0] as given, as a shell
// running a command found on PATH gives its name) and env added.
func runAs(t *testing.T, env []string, path string, argv ...string) result {
	t.Helper()
	cmd := exec.Command(path)
	cmd.Args = argv
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{out.String(), errb.String(), 0}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

const addTunnel = "add tunnel tunnel_id 7 peer_tunnel_id 8 local 192.0.2.1 remote 192.0.2.2 udp_sport 1701 udp_dport 1701 encap udp"

// TestNetnsOption: -n/-netns in every position ip takes it reaches the
// namespace's daemon from outside it, and a missing namespace is ip's error.
func TestNetnsOption(t *testing.T) {
	privtest.Require(t)
	ns := cliNS(t)
	bin := binary(t)
	if r := runCmd(t, nil, bin, "-n", ns.Name, "l2tp"); r.code != 255 {
		t.Fatalf("usage: %+v", r)
	}
	if r := runCmd(t, nil, append([]string{bin, "-n", ns.Name}, strings.Fields(addTunnel)...)...); r.code != 0 || r.err != "" {
		t.Fatalf("-n NS add: %+v", r)
	}
	// Inside, as a positive control: the tunnel is there and not here.
	inside, _, code := l2tpu(t, ns, "-j", "show", "tunnel")
	if code != 0 || !strings.Contains(inside, `"tunnel_id":7`) {
		t.Fatalf("inside: %q %d", inside, code)
	}
	for _, argv := range [][]string{
		{"-n", ns.Name, "-j", "show", "tunnel"},
		{"-j", "-n", ns.Name, "show", "tunnel"},
		{"-j", "-netns", ns.Name, "show", "tunnel"},
		{"--netns", ns.Path(), "-json", "show", "tunnel"},
		{"-j", "-n", ns.Name, "l2tp", "show", "tunnel"},
	} {
		if r := runCmd(t, nil, append([]string{bin}, argv...)...); r.out != inside || r.code != 0 {
			t.Errorf("%v: %+v, want %q", argv, r, inside)
		}
	}
	batch := filepath.Join(t.TempDir(), "batch")
	os.WriteFile(batch, []byte("add session tunnel_id 7 session_id 9 peer_session_id 9 name pwn0\nl2tp show session\n"), 0o644)
	r := runCmd(t, nil, bin, "-n", ns.Name, "-batch", batch)
	if r.code != 0 || !strings.Contains(r.out, "Session 9 in tunnel 7") {
		t.Fatalf("-n NS -batch: %+v", r)
	}
	if _, err := ns.Try("ip", "link", "show", "pwn0"); err != nil {
		t.Fatalf("session interface not in the namespace: %v", err)
	}
	// The host's namespace holds nothing of it.
	if _, err := exec.Command("ip", "link", "show", "pwn0").CombinedOutput(); err == nil {
		t.Fatal("pwn0 exists outside the namespace")
	}
	missing := privtest.Prefix() + "missing"
	r = runCmd(t, nil, bin, "-n", missing, "show", "tunnel")
	if want := `Cannot open network namespace "` + missing + `": No such file or directory` + "\n"; r.err != want || r.code != 255 || r.out != "" {
		t.Fatalf("missing namespace: %+v, want %q", r, want)
	}
	if r := runCmd(t, nil, bin, "-n", ns.Name, "daemon", "stop"); r.code != 0 {
		t.Fatalf("-n NS daemon stop: %+v", r)
	}
}

// shimDir is a directory holding `ip`, a symlink to the binary, to put
// first on PATH.
func shimDir(t *testing.T) (dir string, env []string) {
	dir = t.TempDir()
	if err := os.Symlink(binary(t), filepath.Join(dir, "ip")); err != nil {
		t.Fatal(err)
	}
	return dir, []string{"PATH=" + dir + ":" + os.Getenv("PATH")}
}

// TestIPShim runs the binary as ip through a symlink first on PATH: l2tp
// commands are served, with ip's texts; all else reaches the system's ip
// unchanged, its output and exit status included; -batch mixes both.
func TestIPShim(t *testing.T) {
	privtest.Require(t)
	sysIP, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	ns := cliNS(t)
	dir, env := shimDir(t)
	ip := filepath.Join(dir, "ip") // as a script's "ip" resolves with that PATH
	add := append([]string{ip, "-n", ns.Name, "l2tp"}, strings.Fields(addTunnel)...)
	if r := runCmd(t, env, add...); r.code != 0 || r.err != "" {
		t.Fatalf("ip l2tp add: %+v", r)
	}
	want, _, _ := l2tpu(t, ns, "-j", "show", "tunnel")
	for _, argv := range [][]string{
		{"-n", ns.Name, "-j", "l2tp", "show", "tunnel"},
		{"-j", "-n", ns.Name, "l2", "show", "tunnel"},
		{"-d", "-4", "-n", ns.Name, "-json", "l2tp", "show", "tunnel"},
		{"-r", "-n", ns.Name, "-j", "--", "l2tp", "show", "tunnel"}, // -r is -resolve, -- ends the options
	} {
		if r := runCmd(t, env, append([]string{ip}, argv...)...); r.out != want || r.code != 0 {
			t.Errorf("ip %v: %+v, want %q", argv, r, want)
		}
	}
	if r := runCmd(t, env, ip, "-n", ns.Name, "l2tp", "frobnicate"); r.err != "Command \"frobnicate\" is unknown, try \"ip l2tp help\".\n" || r.code != 255 {
		t.Errorf("unknown l2tp command: %+v", r)
	}
	// Handed over: byte for byte the system's ip, success and failure.
	for _, argv := range [][]string{
		{"-n", ns.Name, "-o", "link", "show", "d0"},
		{"-n", ns.Name, "link", "show", "nosuchdev"},
		{"-n", ns.Name, "frobnicate"},
		{"-V"},
		{"-n", ns.Name, "-4", "addr", "show", "dev", "d0"},
		{"-bogus", "l2tp", "show", "tunnel"},           // ip's own error for its options
		{"-family", "bogus", "l2tp", "show", "tunnel"}, // and their values
	} {
		got := runCmd(t, env, append([]string{ip}, argv...)...)
		sys := runCmd(t, nil, append([]string{sysIP}, argv...)...)
		if got != sys {
			t.Errorf("ip %v: shim %+v, system ip %+v", argv, got, sys)
		}
	}
	// Another copy of the shim further on PATH is not handed back to (it
	// hands on to what follows it), and $L2TPU_IP naming the shim is refused.
	dir2 := t.TempDir()
	if b, err := os.ReadFile(binary(t)); err != nil || os.WriteFile(filepath.Join(dir2, "ip"), b, 0o755) != nil {
		t.Fatal(err)
	}
	loop := []string{"PATH=" + dir + ":" + dir2 + ":" + os.Getenv("PATH")}
	if got, sys := runCmd(t, loop, ip, "-o", "link", "show", "lo"), runCmd(t, nil, sysIP, "-o", "link", "show", "lo"); got != sys {
		t.Errorf("two shims on PATH: %+v, want %+v", got, sys)
	}
	if r := runCmd(t, []string{"L2TPU_IP=" + binary(t)}, ip, "link", "show", "lo"); r.code != 255 || !strings.Contains(r.err, "is the shim itself") {
		t.Errorf("L2TPU_IP naming the shim: %+v", r)
	}
	// The shim's directory twice on PATH (issue 18, finding 8): what comes
	// after its first entry is the system's ip.
	sys := runCmd(t, nil, sysIP, "-o", "link", "show", "lo")
	for _, path := range []string{dir + ":" + dir + ":" + os.Getenv("PATH"), dir + ":" + os.Getenv("PATH") + ":" + dir} {
		if got := runCmd(t, []string{"PATH=" + path}, ip, "-o", "link", "show", "lo"); got != sys {
			t.Errorf("PATH=%s: %+v, want %+v", path, got, sys)
		}
	}
	// $L2TPU_IP is judged and run through one descriptor: the system's ip
	// named itself runs (the positive control); a symlink to it, which its
	// directory's owner could swap between a check and the exec, does not.
	sysFile, err := filepath.EvalSymlinks(sysIP)
	if err != nil {
		t.Fatal(err)
	}
	if got := runCmd(t, []string{"L2TPU_IP=" + sysFile}, ip, "-o", "link", "show", "lo"); got != sys {
		t.Errorf("L2TPU_IP=%s: %+v, want %+v", sysFile, got, sys)
	}
	link := filepath.Join(t.TempDir(), "ip")
	if err := os.Symlink(sysFile, link); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, []string{"L2TPU_IP=" + link}, ip, "-o", "link", "show", "lo"); r.code != 255 || !strings.Contains(r.err, "a symlink") {
		t.Errorf("L2TPU_IP naming a symlink: %+v", r)
	}
	// For root, a root-owned program not named ip is refused (an
	// environment kept across su must not make root run `sh addr`); a
	// wrapper script named ip runs, reading itself through the descriptor.
	shell, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, []string{"L2TPU_IP=" + shell}, ip, "addr"); r.code != 255 || !strings.Contains(r.err, "named ip") {
		t.Errorf("L2TPU_IP=%s as root: %+v", shell, r)
	}
	wrapDir := t.TempDir()
	wrapper := filepath.Join(wrapDir, "ip")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec "+sysFile+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := runCmd(t, []string{"L2TPU_IP=" + wrapper}, ip, "-o", "link", "show", "lo"); got != sys {
		t.Errorf("L2TPU_IP naming a wrapper script: %+v, want %+v", got, sys)
	}
	if r := runCmd(t, nil, ip, "-n", ns.Name, "link", "show", "nosuchdev"); r.code == 0 {
		t.Fatal("a failing command succeeded through the shim") // the status is passed on
	}
	// -batch with mixed lines, in order: the veth must exist before the
	// session line names nothing of it, the link set needs the session's
	// interface, and the failing line's status ends the run without -force.
	batch := filepath.Join(t.TempDir(), "batch")
	os.WriteFile(batch, []byte(strings.Join([]string{
		"link add e0 type veth peer name e1",
		"l2tp add session tunnel_id 7 session_id 9 peer_session_id 9 name pws0",
		"link set pws0 up",
		"l2tp show session",
		"link show nosuchdev",
		"link set e0 up",
	}, "\n")+"\n"), 0o644)
	r := runCmd(t, env, ip, "-n", ns.Name, "-batch", batch)
	if r.code != 1 || !strings.Contains(r.out, "Session 9 in tunnel 7") ||
		!strings.HasSuffix(r.err, "Command failed "+batch+":5\n") {
		t.Fatalf("ip -batch: %+v", r)
	}
	for _, dev := range []string{"e0", "pws0"} {
		if _, err := ns.Try("ip", "link", "show", dev); err != nil {
			t.Errorf("%s not made by the batch: %v", dev, err)
		}
	}
	if out := ns.Run(t, "ip", "-o", "link", "show", "pws0"); !strings.Contains(out, ",UP") {
		t.Errorf("pws0 not set up by the batch: %s", out)
	}
	if out := ns.Run(t, "ip", "-o", "link", "show", "e0"); strings.Contains(out, ",UP") {
		t.Errorf("the line after the failure ran without -force: %s", out)
	}
	r = runCmd(t, env, ip, "-n", ns.Name, "-force", "-batch", batch)
	if r.code != 1 || !strings.Contains(r.err, "RTNETLINK answers: File exists\nCommand failed "+batch+":2\n") {
		t.Fatalf("ip -force -batch: %+v", r)
	}
	if out := ns.Run(t, "ip", "-o", "link", "show", "e0"); !strings.Contains(out, ",UP") {
		t.Errorf("-force did not go on after the failure: %s", out)
	}
}
