package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/l2tpu/l2tpu/cli"
	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// builtTool is a command built once per test run into a directory anyone
// may read, so that tests can run it as an unprivileged user too.
type builtTool struct {
	pkg, name string
	args      []string // extra go build arguments
	once      sync.Once
	path      string
	err       error
}

func (b *builtTool) get(t *testing.T) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "l2tpu-"+b.name)
		if err != nil {
			b.err = err
			return
		}
		os.Chmod(dir, 0o755)
		b.path = filepath.Join(dir, b.name)
		args := append(append([]string{"build"}, b.args...), "-o", b.path, b.pkg)
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as make build: it may run in an empty root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var (
	l2tpuTool    = &builtTool{pkg: ".", name: "l2tpu", args: []string{"-ldflags", "-X main.version=corpus"}}
	attackerTool = &builtTool{pkg: "../../internal/attacker", name: "attacker"}
)

// TestMain removes the tools built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, b := range []*builtTool{l2tpuTool, attackerTool, capexecTool} {
		if b.path != "" {
			os.RemoveAll(filepath.Dir(b.path))
		}
	}
	os.Exit(code)
}

// binary builds l2tpu once per test run, as `make build` does.
func binary(t *testing.T) string { return l2tpuTool.get(t) }

// attacker builds internal/attacker (see there).
func attacker(t *testing.T) string { return attackerTool.get(t) }

// corpusCase is one entry of testdata/corpus.txt:
//
//	## title
//	$ ARGS          (words as ip -batch splits them, typed after `l2tpu`)
//	? STATUS        (exit status; 0 if absent)
//	1> LINE         (expected stdout line; "1>" alone is an empty line)
//	2> LINE         (expected stderr line)
type corpusCase struct {
	title    string
	line     int
	args     []string
	status   int
	out, err string
}

func loadCorpus(t *testing.T, path string) []corpusCase {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cs []corpusCase
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "## "):
			cs = append(cs, corpusCase{title: l[3:], line: n})
		case len(cs) == 0 || l == "" || strings.HasPrefix(l, "# "):
		case strings.HasPrefix(l, "$ ") || l == "$":
			cs[len(cs)-1].args = cli.SplitLine(strings.TrimPrefix(l, "$"))
		case strings.HasPrefix(l, "? "):
			cs[len(cs)-1].status, _ = strconv.Atoi(l[2:])
		case strings.HasPrefix(l, "1>"):
			cs[len(cs)-1].out += strings.TrimPrefix(l[2:], " ") + "\n"
		case strings.HasPrefix(l, "2>"):
			cs[len(cs)-1].err += strings.TrimPrefix(l[2:], " ") + "\n"
		default:
			t.Fatalf("%s:%d: cannot read %q", path, n, l)
		}
	}
	return cs
}

// cliNS is a namespace with an address to bind and a route to the
// documentation peers; its daemon is stopped (by PID) at the end.
func cliNS(t *testing.T) *privtest.NS {
	ns := privtest.NewNS(t, privtest.Prefix())
	ns.Run(t, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	ns.Run(t, "ip", "link", "set", "d0", "up")
	ns.Run(t, "ip", "link", "set", "d1", "up")
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "d0")
	ns.Run(t, "ip", "addr", "add", "2001:db8::1/64", "dev", "d0", "nodad")
	ns.Run(t, "ip", "route", "add", "default", "via", "192.0.2.254")
	t.Cleanup(func() { stopDaemon(t, ns) })
	return ns
}

// stopDaemon ends the namespace's daemon, if one runs, showing its log
// when the test failed.
func stopDaemon(t *testing.T, ns *privtest.NS) {
	if t.Failed() {
		if p, err := daemon.PathsAt(ns.Path()); err == nil {
			if log, err := os.ReadFile(p.Log); err == nil {
				t.Logf("daemon log:\n%s", log)
			}
		}
	}
	daemon.StopInNamespace(ns.Path())
}

// l2tpu runs the binary in the namespace.
func l2tpu(t *testing.T, ns *privtest.NS, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, binary(t)}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestCorpus runs every command of testdata/corpus.txt, in order, against
// the real binary and the daemon the first `add` starts.
func TestCorpus(t *testing.T) {
	privtest.Require(t)
	cases := loadCorpus(t, "testdata/corpus.txt")
	if len(cases) < 100 {
		t.Fatalf("only %d cases", len(cases))
	}
	ns := cliNS(t)
	for _, c := range cases {
		out, errs, code := l2tpu(t, ns, c.args...)
		if out != c.out || errs != c.err || code != c.status {
			t.Errorf("corpus.txt:%d %s\n$ l2tpu %s\nstatus %d, want %d\n--- stdout\n%s--- want\n%s--- stderr\n%s--- want\n%s",
				c.line, c.title, strings.Join(c.args, " "), code, c.status, out, c.out, errs, c.err)
		}
	}
}
