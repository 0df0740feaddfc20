// Command capexec runs a command with only the named capabilities in its
// bounding set, as a container runtime does (`docker run --cap-drop ALL
// --cap-add NET_ADMIN`): for tests that run l2tpu in a root file system
// holding nothing but static binaries.
//
//	capexec net_admin,net_raw -- /l2tpu ...
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

var names = map[string]int{"net_admin": unix.CAP_NET_ADMIN, "net_raw": unix.CAP_NET_RAW}

// The bounding set is a thread's: drops and exec must happen on one thread
// (an exec from a thread the runtime moved to keeps what another dropped,
// seen as a daemon holding CAP_CHOWN).
func init() { runtime.LockOSThread() }

func main() {
	if len(os.Args) < 4 || os.Args[2] != "--" {
		fmt.Fprintln(os.Stderr, "usage: capexec CAP[,CAP...] -- COMMAND [ARG...]")
		os.Exit(2)
	}
	keep := map[int]bool{}
	for _, n := range strings.Split(os.Args[1], ",") {
		c, ok := names[n]
		if !ok {
			fmt.Fprintf(os.Stderr, "capexec: unknown capability %q\n", n)
			os.Exit(2)
		}
		keep[c] = true
	}
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if !keep[c] {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				fmt.Fprintf(os.Stderr, "capexec: drop capability %d: %v\n", c, err)
				os.Exit(1)
			}
		}
	}
	err := unix.Exec(os.Args[3], os.Args[3:], os.Environ())
	fmt.Fprintf(os.Stderr, "capexec: %v\n", err)
	os.Exit(1)
}
