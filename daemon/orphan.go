package daemon

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The kernel destroys a network namespace, and its L2TP state with it,
// when nothing holds it any more; a daemon that stayed would keep it alive
// for nobody. The daemon watches only what it can see for certain: a
// namespace that was mounted (ip netns add) when it started, whose mounts
// are all gone (ip netns del), and in which no other thread of any process
// runs. A namespace that was never mounted is never given up. A process
// whose namespace the daemon may not read (a sandbox's init, or any other
// process when the daemon runs without CAP_SYS_PTRACE) is not seen: the
// daemon therefore stops as with -keep, so that a holder it missed loses
// nothing but the daemon until its next l2tpu command restarts it.

// nsMounts returns the mount points of the caller's network namespace
// (nsfs mounts of it) in this mount namespace, and the namespace's name
// ("net:[INODE]").
func nsMounts() (self string, points []string) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return "", nil
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return self, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "nsfs ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 && f[3] == self {
			points = append(points, f[4])
		}
	}
	return self, points
}

// orphaned reports whether the namespace named self, mounted when the
// daemon started, is now unmounted and has no other thread in it but
// those of except (the daemon's keeper).
func orphaned(self string, except ...int) bool {
	if _, points := nsMounts(); len(points) > 0 {
		return false
	}
	me := os.Getpid()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, p := range procs {
		pid := p.Name()
		if pid[0] < '0' || pid[0] > '9' || pid == itoa(me) || slices.ContainsFunc(except, func(e int) bool { return e > 0 && pid == itoa(e) }) {
			continue
		}
		tasks, err := filepath.Glob("/proc/" + pid + "/task/*/ns/net")
		if err != nil {
			return false
		}
		for _, t := range tasks {
			if ns, err := os.Readlink(t); err == nil && ns == self {
				return false
			}
		}
	}
	return true
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
