package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrRunDir: no runtime directory l2tpu may use.
var ErrRunDir = errors.New("no usable runtime directory")

// RuntimeDir is where daemons keep their runtime files (journal, PID, log):
// RunDir where the caller may write there (root of the machine); else, as
// in a rootless container or `unshare -Urn`, $XDG_RUNTIME_DIR/l2tpu; else
// a private directory in the system's temporary directory named by the
// caller's user outside any user namespace. The daemon gets
// XDG_RUNTIME_DIR from the client that starts it, so both choose alike.
func RuntimeDir() (string, error) {
	if err := os.MkdirAll(RunDir, 0o700); err == nil && unix.Access(RunDir, unix.W_OK|unix.X_OK) == nil {
		return RunDir, nil
	}
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		return privateDir(filepath.Join(x, "l2tpu"))
	}
	return privateDir(filepath.Join(os.TempDir(), "l2tpu-"+strconv.Itoa(outsideUID())))
}

// privateDir makes dir (mode 0700) or checks that it is the caller's own
// directory, not a link and not open to others: in a shared place such as
// /tmp another user could have made it first, to read or plant state.
func privateDir(dir string) (string, error) {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("%w: %s: %v (set XDG_RUNTIME_DIR to a private directory)", ErrRunDir, dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrRunDir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%w: %s is not a private directory of this user (set XDG_RUNTIME_DIR to one)", ErrRunDir, dir)
	}
	return dir, nil
}

// outsideUID is the caller's effective uid as the initial user namespace
// sees it (uid_map), so that users who are all root in their own user
// namespaces do not share a directory.
func outsideUID() int {
	uid := os.Geteuid()
	f, err := os.Open("/proc/self/uid_map")
	if err != nil {
		return uid
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var in, out, n int
		if _, err := fmt.Sscan(strings.TrimSpace(sc.Text()), &in, &out, &n); err == nil && uid >= in && uid < in+n {
			return out + uid - in
		}
	}
	return uid
}
