package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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
// nothing but the daemon until its next l2tpu command restarts it, unless
// it is sure (heldElsewhere: no process it can see, and it can see every
// process's descriptors and mounts, holds the namespace): then its state
// goes with it, files and all, as the kernel's does.

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
	return self, mountsOf(b, self)
}

// mountsOf are the mount points of the namespace named ns in a mountinfo
// table.
func mountsOf(mountinfo []byte, ns string) (points []string) {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "nsfs ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 && f[3] == ns {
			points = append(points, f[4])
		}
	}
	return points
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
		if pid[0] < '0' || pid[0] > '9' || pid == strconv.Itoa(me) || slices.ContainsFunc(except, func(e int) bool { return e > 0 && pid == strconv.Itoa(e) }) {
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

// heldElsewhere reports whether any process the daemon can see holds the
// namespace named self other than by running in it: an open descriptor of
// it, or a mount of it in another mount namespace. why says what holds it,
// or what could not be seen (then it may be held: the daemon is not sure).
// except are the daemon's own (its keeper).
func heldElsewhere(self string, except ...int) (held bool, why string) {
	me := os.Getpid()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return true, err.Error()
	}
	var want unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &want); err != nil {
		return true, err.Error()
	}
	mountNS := map[string]bool{}
	for _, p := range procs {
		pid := p.Name()
		if pid[0] < '0' || pid[0] > '9' || pid == strconv.Itoa(me) || slices.ContainsFunc(except, func(e int) bool { return e > 0 && pid == strconv.Itoa(e) }) {
			continue
		}
		fds, err := os.ReadDir("/proc/" + pid + "/fd")
		if errors.Is(err, os.ErrNotExist) {
			continue // gone
		}
		if err != nil {
			return true, fmt.Sprintf("cannot see the descriptors of pid %s: %v", pid, err)
		}
		for _, fd := range fds {
			// The link names the path it was opened by (/run/netns/X):
			// what it is, the file says.
			var st unix.Stat_t
			if unix.Stat("/proc/"+pid+"/fd/"+fd.Name(), &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
				return true, fmt.Sprintf("pid %s holds it open", pid)
			}
		}
		mnt, err := os.Readlink("/proc/" + pid + "/ns/mnt")
		if err != nil || mountNS[mnt] {
			continue
		}
		mountNS[mnt] = true
		if b, err := os.ReadFile("/proc/" + pid + "/mountinfo"); err == nil && mountsOf(b, self) != nil {
			return true, fmt.Sprintf("it is mounted in the mount namespace of pid %s", pid)
		}
	}
	return false, ""
}

// watchNamespace stops the daemon once its namespace is gone for everyone
// else (see orphaned). It stops as with Keep: if something the daemon
// cannot see still holds the namespace, a later command restores it all.
func (s *Server) watchNamespace(ctx context.Context, stop func()) {
	self, points := nsMounts()
	if len(points) == 0 {
		s.log.Info("the network namespace has no name (ip netns) in this mount table: the daemon stays until stopped", "netns", self)
		return // never mounted: never given up
	}
	s.log.Info("watching the network namespace: the daemon stops once it is deleted and empty", "netns", self, "mounted_at", points)
	every(ctx, s.opt.OrphanCheck, func() bool {
		if !orphaned(self, s.keeperPID()) {
			return true
		}
		held, why := heldElsewhere(self, s.keeperPID())
		s.mu.Lock()
		if held {
			s.log.Info("the network namespace was deleted and nothing else is in it, but it may be held: stopping as with -keep",
				"mounted_at", points, "why", why)
			s.opt.Keep = true
		} else {
			// No namespace can ever have this one's cookie, so no
			// daemon would ever read its files again.
			s.log.Info("the network namespace is gone: stopping, its state and files with it", "mounted_at", points)
			s.opt.Keep, s.gone = false, true
		}
		s.mu.Unlock()
		stop()
		return false
	})
}

func (s *Server) keeperPID() int {
	if s.keeper == nil {
		return 0
	}
	return s.keeper.alivePID()
}
