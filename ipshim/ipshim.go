// Package ipshim lets the l2tpu binary stand in for ip(8): run under the
// name "ip" (a symlink placed before the system's ip on PATH), it serves
// `ip [OPTIONS] l2tp ...` itself, with ip's grammar, messages and output,
// and hands every other command to the system's ip unchanged. Tools that
// run `ip l2tp` then work on a host without the kernel's L2TP modules.
package ipshim

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/l2tpu/l2tpu/cli"
	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/internal/sysprog"
)

// EnvIP names the system's ip explicitly (else: the next ip on PATH that
// is not this binary).
const EnvIP = "L2TPU_IP"

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

// ipOption is one of ip's global options, in ip.c's order: the first whose
// name the word is a prefix of is the one ip takes.
type ipOption struct {
	name  string
	exact bool                           // -4, -6 and the like: the word itself
	value func(v string) bool            // takes a value, which ip accepts if true
	apply func(g *global, v string) bool // false: not for l2tpu (keep in others)
	ips   bool                           // ip's own output (-Version, -help)
}

func anyValue(string) bool { return true }

// families are ip's read_family words.
func family(v string) bool {
	switch v {
	case "inet", "inet6", "link", "ipx", "dnet", "mpls", "bridge":
		return true
	}
	return false
}

func unsigned(v string) bool { _, err := strconv.ParseUint(v, 0, 32); return err == nil }

// ipOptions are ip.c's global options (iproute2 6.x).
var ipOptions = []ipOption{
	{name: "-loops", value: anyValue},
	{name: "-family", value: family},
	{name: "-4", exact: true}, {name: "-6", exact: true}, {name: "-0", exact: true},
	{name: "-I", exact: true}, {name: "-D", exact: true}, {name: "-M", exact: true}, {name: "-B", exact: true},
	{name: "-human"}, {name: "-human-readable"}, {name: "-iec"},
	{name: "-stats", apply: func(g *global, _ string) bool { g.format.Stats = true; return false }},
	{name: "-statistics", apply: func(g *global, _ string) bool { g.format.Stats = true; return false }},
	{name: "-details"}, {name: "-resolve"},
	{name: "-oneline", apply: func(g *global, _ string) bool { g.format.Oneline = true; return false }},
	{name: "-timestamp"}, {name: "-tshort"},
	{name: "-Version", ips: true},
	{name: "-force", apply: func(g *global, _ string) bool { g.force = true; return false }},
	{name: "-batch", value: anyValue, apply: func(g *global, v string) bool { g.batch = v; return true }},
	{name: "-brief"},
	{name: "-json", apply: func(g *global, _ string) bool { g.format.JSON = true; return false }},
	{name: "-pretty", apply: func(g *global, _ string) bool { g.format.Pretty = true; return false }},
	{name: "-rcvbuf", value: unsigned},
	{name: "-color"},
	{name: "-help", ips: true},
	{name: "-netns", value: anyValue, apply: func(g *global, v string) bool { g.netns = v; return true }},
	{name: "-Numeric"},
	{name: "-all"},
}

// lookupOption is ip.c's if-else chain over opt (one leading '-' of a
// "--x" dropped).
func lookupOption(opt string) *ipOption {
	if strings.HasPrefix(opt, "-color=") || strings.HasPrefix(opt, "-colour=") {
		opt = "-color"
	}
	for i := range ipOptions {
		o := &ipOptions[i]
		if o.exact && opt == o.name || !o.exact && strings.HasPrefix(o.name, opt) {
			return o
		}
	}
	return nil
}

// scan reads ip's global options (ip.c's main loop) as far as the object.
// Whatever ip itself would answer (its version, help, an unknown option or
// a value it refuses, a command without an l2tp object) is handed over.
func scan(args []string) global {
	var g global
	i := 0
	for ; i < len(args); i++ {
		word := args[i]
		if word == "--" {
			i++
			break
		}
		if word == "" || word[0] != '-' {
			break
		}
		opt := word
		if len(opt) > 1 && opt[1] == '-' {
			opt = opt[1:]
		}
		o := lookupOption(opt)
		if o == nil || o.ips {
			g.handOver = true
			return g
		}
		v := ""
		if o.value != nil {
			if i+1 >= len(args) || !o.value(args[i+1]) {
				g.handOver = true // ip prints its usage or refuses the value
				return g
			}
			i++
			v = args[i]
		}
		if o.apply != nil && o.apply(&g, v) {
			continue // the shim's to act on, not ip's
		}
		g.others = append(g.others, word)
		if o.value != nil {
			g.others = append(g.others, v)
		}
	}
	g.object = i
	if g.batch == "" && (i == len(args) || !cli.IsL2TPObject(args[i])) {
		g.handOver = true
	}
	return g
}

// entered marks the shim run again inside the namespace of -n (its value):
// only the shim passes it, to itself.
const entered = "--l2tpu-entered-netns="

// Main is ip's main for the shim: args are os.Args[1:].
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	inNetns := ""
	if len(args) > 0 && strings.HasPrefix(args[0], entered) {
		inNetns, args = strings.TrimPrefix(args[0], entered), args[1:]
	}
	g := scan(args)
	if g.handOver {
		return handOver(args, stderr)
	}
	if g.netns != "" {
		// Serve inside the namespace: this binary again, without -n.
		argv := append([]string{os.Args[0], entered + g.netns}, g.others...)
		if g.batch != "" {
			argv = append(argv, "-batch", g.batch)
		}
		return cli.EnterNetns(g.netns, append(argv, args[g.object:]...), stderr)
	}
	f, force, batchFile, rest := g.format, g.force, g.batch, args[g.object:]
	r := &cli.Runner{Backend: daemon.NewClient(), Format: f, Out: stdout, Err: stderr, Prog: cli.IPProg}
	if batchFile == "" {
		return r.Main(rest[1:])
	}
	// ip's options go with every line handed to ip, -n too (ip then sets
	// up the namespace's /sys and /etc/netns as it does; it takes names
	// only), and "--", so that a line is never read as options.
	opts := slices.Clone(g.others)
	if inNetns != "" && !strings.Contains(inNetns, "/") {
		opts = append([]string{"-n", inNetns}, opts...)
	}
	r.Other = func(line []string) int {
		return runIP(append(append(slices.Clone(opts), "--"), line...), stdout, stderr)
	}
	return r.BatchFile(stdin, batchFile, force)
}

// System is the system's ip: $L2TPU_IP, else the next ip on PATH that is
// not this binary.
var System = sysprog.Program{Name: "ip", Env: EnvIP, Files: []string{"ip"}, Install: "iproute2"}

// handOver replaces this process with the system's ip, given args as they
// came: its output and exit status are the caller's.
func handOver(args []string, stderr io.Writer) int {
	return System.Exec(append([]string{System.Name}, args...), stderr, cli.ExitUsage)
}

// runIP runs the system's ip with args (a batch line) and returns its exit
// status.
func runIP(args []string, stdout, stderr io.Writer) int {
	return System.Run(args, stdout, stderr, cli.ExitUsage)
}
