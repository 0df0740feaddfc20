// Package userns tells which user namespace the process is in.
package userns

import (
	"os"
	"strings"
)

// Initial reports whether the caller is in the initial user namespace (its
// uid_map maps every uid to itself).
func Initial() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return true // no user namespaces: the initial one
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}
