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

	"github.com/l2tpu/l2tpu/internal/userns"
	"golang.org/x/sys/unix"
)

// ErrRunDir: no runtime directory l2tpu may use.
var ErrRunDir = errors.New("no usable runtime directory")

// RuntimeDir is where daemons keep their runtime files (journal, PID, log):
// RunDir where the caller may write there. Root of the machine (the
// initial user namespace) uses nothing else: a directory another user
// controls could hand its daemon a stale journal. Others, as in a rootless
// container or `unshare -Urn`, fall back to $XDG_RUNTIME_DIR/l2tpu, else
// to /tmp/l2tpu-UID (UID as the parent user namespace sees the caller).
// The daemon gets XDG_RUNTIME_DIR from the client that starts it, so both
// choose alike.
func RuntimeDir() (string, error) {
	err := os.MkdirAll(RunDir, 0o700)
	if err == nil {
		err = unix.Access(RunDir, unix.W_OK|unix.X_OK)
	}
	if err == nil {
		return RunDir, nil
	}
	if os.Geteuid() == 0 && userns.Initial() {
		return "", fmt.Errorf("%w: %s: %w (root keeps its state nowhere else: make it writable)", ErrRunDir, RunDir, err)
	}
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		return privateDir(filepath.Join(x, "l2tpu"))
	}
	// Not $TMPDIR: the daemon, started with a minimal environment, must
	// choose the same.
	return privateDir(filepath.Join("/tmp", "l2tpu-"+strconv.Itoa(outsideUID())))
}

// privateDir makes dir (mode 0700) or checks that it is the caller's own
// directory, not a link and not open to others: in a shared place such as
// /tmp another user could have made it first, to read or plant state.
func privateDir(dir string) (string, error) {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("%w: %s: %w (set XDG_RUNTIME_DIR to a private directory)", ErrRunDir, dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrRunDir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%w: %s is not a private directory of this user (set XDG_RUNTIME_DIR to one)", ErrRunDir, dir)
	}
	return dir, nil
}

// outsideUID is the caller's effective uid as the parent user namespace
// sees it (uid_map), so that users who are all root in their own user
// namespaces do not share a directory. (Nested namespaces map to their
// parent's view; a directory of another user's is refused, not shared.)
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
