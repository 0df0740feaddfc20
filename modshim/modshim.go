// Package modshim lets the l2tpu binary stand in for modprobe(8): run under
// the name "modprobe" (a symlink placed before the system's modprobe on
// PATH), it answers the loading and removal of the kernel's L2TP modules,
// which l2tpu provides in userspace, and hands every other invocation to the
// system's modprobe unchanged. Tools that run `modprobe l2tp_eth` before
// `ip l2tp` (Gentoo's netifrc, VyOS) then work on a host without the
// modules. The kernel's own module requests use kernel.modprobe, not PATH,
// and are left alone.
package modshim

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/l2tpu/l2tpu/internal/sysprog"
)

// EnvModprobe names the system's modprobe explicitly (else: the next
// modprobe on PATH that is not this binary).
const EnvModprobe = "L2TPU_MODPROBE"

// System is the system's modprobe. kmod is modprobe by the name it is run
// under, which is how Debian and others install it.
var System = sysprog.Program{Name: "modprobe", Env: EnvModprobe, Files: []string{"modprobe", "kmod"}, Install: "kmod"}

// Modules are the kernel's L2TPv3 modules, whose work l2tpu does.
// l2tp_ppp (L2TPv2's PPP pseudowires) is not among them: l2tpu does not
// provide it, so asking for it fails as it does on the host.
var Modules = []string{"l2tp_core", "l2tp_netlink", "l2tp_eth", "l2tp_ip", "l2tp_ip6"}

// statusFail is modprobe's exit status for a failure of its own.
const statusFail = 1

// inKernel says whether the kernel has module m, loaded or built in.
func inKernel(m string) bool {
	_, err := os.Stat(filepath.Join("/sys/module", m))
	return err == nil
}

// IsShim says whether argv0 runs the binary as modprobe.
func IsShim(argv0 string) bool { return filepath.Base(argv0) == "modprobe" }

// request is an invocation the shim answers itself.
type request struct {
	remove, verbose bool
	modules         []string
}

// parse reads modprobe's command line (kmod's getopt_long, which permutes:
// options may follow the names) and says whether the shim answers it:
// only -a, -r, -q, -v and -n (and their long names) over names that are
// all L2TP modules, with no module parameters. Anything else, including
// what modprobe would refuse, is the system's to answer.
func parse(args []string, posix bool) (request, bool) {
	var r request
	all := false
	var words []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if posix && len(words) > 0 && a != "--" && len(a) > 1 && a[0] == '-' {
			return r, false // POSIXLY_CORRECT: getopt stops at the first word
		}
		switch {
		case a == "--":
			words = append(words, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "--"):
			switch a {
			case "--all":
				all = true
			case "--remove":
				r.remove = true
			case "--quiet":
			case "--verbose":
				r.verbose = true
			case "--dry-run", "--show": // nothing is loaded either way
			default:
				return r, false // abbreviations and every other option
			}
		case len(a) > 1 && a[0] == '-':
			for _, c := range a[1:] {
				switch c {
				case 'a':
					all = true
				case 'r':
					r.remove = true
				case 'q':
				case 'v':
					r.verbose = true
				case 'n':
				default:
					return r, false
				}
			}
		default:
			words = append(words, a)
		}
	}
	// Without -a or -r the first word is the module, the rest its
	// parameters, which the shim leaves to modprobe.
	if len(words) == 0 || !all && !r.remove && len(words) > 1 {
		return r, false
	}
	for _, w := range words {
		m := strings.ReplaceAll(w, "-", "_") // modprobe's names: - is _
		if !slices.Contains(Modules, m) {
			return r, false
		}
		r.modules = append(r.modules, m)
	}
	return r, true
}

// Main is modprobe's main for the shim: argv is os.Args.
func Main(argv []string, stderr io.Writer) int {
	r, ok := parse(argv[1:], os.Getenv("POSIXLY_CORRECT") != "")
	// MODPROBE_OPTIONS are options kmod reads before argv's: the system's
	// to act on. A module the kernel has (loaded or built in) is the
	// kernel's: removing it, or loading it, is the system's modprobe's
	// to do or refuse.
	if !ok || os.Getenv("MODPROBE_OPTIONS") != "" || slices.ContainsFunc(r.modules, inKernel) {
		return System.Exec(argv, stderr, statusFail)
	}
	if r.verbose {
		what := "loaded"
		if r.remove {
			what = "removed"
		}
		for _, m := range r.modules {
			fmt.Fprintf(stderr, "modprobe: %s: provided by l2tpu in userspace, nothing %s\n", m, what)
		}
	}
	return 0
}
