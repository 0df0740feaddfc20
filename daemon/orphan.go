package daemon

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// orphaned reports whether nothing but this process holds its network
// namespace: not the machine's initial one, no other process in it, and no
// nsfs mount of it (`ip netns del` removes that). The kernel then destroys
// the namespace, and its L2TP state with it; a daemon that stayed would
// keep it alive for nobody.
func orphaned() bool {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return false
	}
	// Where PID 1 cannot be read (a sandbox), the other tests decide: the
	// initial namespace always has other processes.
	if first, err := os.Readlink("/proc/1/ns/net"); err == nil && first == self {
		return false
	}
	if mounted(self) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == me {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && ns == self {
			return false
		}
	}
	return true
}

// mounted reports an nsfs mount of the namespace ns ("net:[INODE]") in this
// mount namespace.
func mounted(ns string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return true // cannot tell: assume it is
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		l := sc.Text()
		pre, post, ok := strings.Cut(l, " - ")
		if !ok || !strings.HasPrefix(post, "nsfs ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 4 && f[3] == ns {
			return true
		}
	}
	return false
}
