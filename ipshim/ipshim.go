// Package ipshim lets the l2tpu binary stand in for ip(8): run under the
// name "ip" (a symlink placed before the system's ip on PATH), it serves
// `ip [OPTIONS] l2tp ...` itself, with ip's grammar, messages and output,
// and hands every other command to the system's ip unchanged. Tools that
// run `ip l2tp` then work on a host without the kernel's L2TP modules.
package ipshim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/l2tpu/l2tpu/cli"
	"github.com/l2tpu/l2tpu/daemon"
)

// EnvIP names the system's ip explicitly (else: the next ip on PATH that
// is not this binary).
const EnvIP = "L2TPU_IP"

// ErrNoIP: no system ip to hand commands to.
var ErrNoIP = errors.New("ipshim: no system ip found on PATH after the shim; install iproute2 or set " + EnvIP)

// valued are ip's global options that take a value (ip.c), by the prefix
// each needs: the object word comes after their values.
var valued = []string{"-loops", "-family", "-batch", "-rcvbuf", "-netns"}

// IsShim says whether argv0 runs the binary as ip.
func IsShim(argv0 string) bool { return filepath.Base(argv0) == "ip" }

// global is what the shim takes from ip's global options.
type global struct {
	format   cli.Format
	force    bool
	batch    string   // -batch FILE
	netns    string   // -n NETNS
	others   []string // the options but -batch and -n, with their values
	object   int      // where the object word is (len(args) if none)
	handOver bool     // the system's ip is to run the whole command
}

// scan reads ip's global options (ip.c's main loop) as far as the object.
func scan(args []string) global {
	var g global
	i := 0
	for ; i < len(args); i++ {
		opt := args[i]
		if len(opt) < 2 || opt[0] != '-' {
			break
		}
		if opt == "--" {
			g.handOver = true
			return g
		}
		if len(opt) > 2 && opt[1] == '-' {
			opt = opt[1:]
		}
		if takesValue(opt) {
			if i+1 >= len(args) {
				g.handOver = true // ip prints its usage
				return g
			}
			switch {
			case matches(opt, "-batch"):
				g.batch = args[i+1]
			case matches(opt, "-netns"):
				g.netns = args[i+1]
			default:
				g.others = append(g.others, args[i], args[i+1])
			}
			i++
			continue
		}
		switch {
		case matches(opt, "-stats"), matches(opt, "-statistics"):
			g.format.Stats = true
		case matches(opt, "-oneline"):
			g.format.Oneline = true
		case matches(opt, "-force"):
			g.force = true
		case matches(opt, "-json"):
			g.format.JSON = true
		case matches(opt, "-pretty"):
			g.format.Pretty = true
		case matches(opt, "-Version"), len(opt) > 2 && matches(opt, "-help"):
			g.handOver = true
			return g
		}
		// Any other option is ip's display choice, which l2tp output does
		// not use; ip itself judges it for other objects.
		g.others = append(g.others, args[i])
	}
	g.object = i
	if g.batch == "" && (i == len(args) || !cli.IsL2TPObject(args[i])) {
		g.handOver = true
	}
	return g
}

// Main is ip's main for the shim: args are os.Args[1:].
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := scan(args)
	if g.handOver {
		return handOver(args, stderr)
	}
	if g.netns != "" {
		// Serve inside the namespace: this binary again, without -n.
		argv := append(append([]string{os.Args[0]}, g.others...), args[g.object:]...)
		if g.batch != "" {
			argv = append(append([]string{os.Args[0], "-batch", g.batch}, g.others...), args[g.object:]...)
		}
		return cli.EnterNetns(g.netns, argv, stderr)
	}
	f, force, batchFile, rest := g.format, g.force, g.batch, args[g.object:]
	r := &cli.Runner{Backend: daemon.NewClient(), Format: f, Out: stdout, Err: stderr, Prog: cli.IPProg}
	if batchFile == "" {
		return r.Main(rest[1:])
	}
	// ip's options, but for -batch and -n, go with every line it hands
	// to ip.
	r.Other = func(line []string) int {
		return runIP(append(append([]string{}, g.others...), line...), stdout, stderr)
	}
	return r.BatchFile(stdin, batchFile, force)
}

func takesValue(opt string) bool {
	for _, v := range valued {
		if matches(opt, v) {
			return true
		}
	}
	return false
}

// matches is ip's matches(): arg is a non-empty prefix of word.
func matches(arg, word string) bool { return len(arg) > 1 && strings.HasPrefix(word, arg) }

// handOver replaces this process with the system's ip, given args as they
// came: its output and exit status are the caller's.
func handOver(args []string, stderr io.Writer) int {
	ip, err := SystemIP()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return cli.ExitUsage
	}
	err = syscall.Exec(ip, append([]string{"ip"}, args...), os.Environ())
	fmt.Fprintf(stderr, "ipshim: exec %s: %v\n", ip, err)
	return cli.ExitUsage
}

// runIP runs the system's ip with args (a batch line) and returns its exit
// status.
func runIP(args []string, stdout, stderr io.Writer) int {
	ip, err := SystemIP()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return cli.ExitUsage
	}
	cmd := exec.Command(ip, args...)
	cmd.Args[0] = "ip"
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode()
	case err != nil:
		fmt.Fprintf(stderr, "ipshim: %v\n", err)
		return cli.ExitUsage
	}
	return 0
}

// SystemIP is the ip commands are handed to: $L2TPU_IP, else the first ip
// on PATH that is not this binary.
func SystemIP() (string, error) {
	if p := os.Getenv(EnvIP); p != "" {
		return p, nil
	}
	self, err := os.Stat("/proc/self/exe")
	if err != nil {
		return "", err
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, "ip")
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 || os.SameFile(st, self) {
			continue
		}
		return p, nil
	}
	return "", ErrNoIP
}
