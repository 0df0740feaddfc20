// Package sysprog finds and runs the system's program that one of the
// l2tpu binary's shims stands in for (ip, modprobe): the shim answers what
// is L2TP's and hands everything else to the real program unchanged.
package sysprog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/userns"
)

// ErrNotFound: no system program to hand a command to.
var ErrNotFound = errors.New("no system program found")

// Program is a system program a shim stands in for.
type Program struct {
	// Name is the program's name: the shim's own, and argv[0] of what
	// it hands over (kmod, say, is modprobe by that name).
	Name string
	// Env names the program explicitly, overriding the search of PATH.
	Env string
	// Files are the names of a file root may run through Env: a name
	// that is not a shell or interpreter (Name, and kmod for modprobe).
	Files []string
	// Install says what provides the program, for the error.
	Install string
}

// Find is the program commands are handed to: $Env, else the first Name on
// PATH after this binary's own entry (so that another copy of the shim
// further on does not hand back to this one) that is not this binary, and,
// for root, that only root may change (see trusted). The path is valid
// until done is called.
func (p Program) Find() (path string, done func(), err error) {
	self, err := os.Stat("/proc/self/exe")
	if err != nil {
		return "", nil, err
	}
	if e := os.Getenv(p.Env); e != "" {
		return p.openEnv(e, self)
	}
	root := os.Geteuid() == 0
	var found []string
	seen := false // the shim's own entry (which may be on PATH twice)
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			dir = "." // as execvp
		}
		c := filepath.Join(dir, p.Name)
		st, err := os.Stat(c)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			continue
		}
		if os.SameFile(st, self) {
			if !seen {
				found = found[:0] // only what comes after the shim
			}
			seen = true
			continue
		}
		found = append(found, c)
	}
	for _, c := range found {
		if !root {
			return c, func() {}, nil
		}
		// Root runs the first that only root may change, through a
		// descriptor: what is judged is what runs.
		if path, done, err := openTrusted(c); err == nil {
			return path, done, nil
		}
	}
	return "", nil, fmt.Errorf("%w: no system %s on PATH after the shim; install %s or set %s", ErrNotFound, p.Name, p.Install, p.Env)
}

// rootOnly says whether only root may change the file or directory: owned
// by root (or, in a user namespace, by a user it does not map, whom no one
// in it can act for), writable by no one else. A directory others may
// write is root's only with the sticky bit, where no one else can replace
// root's entries (/tmp).
func rootOnly(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || !rootUID(sys.Uid) {
		return false
	}
	if st.Mode()&os.ModeSymlink != 0 || st.Mode().Perm()&0o022 == 0 {
		// A link's own mode means nothing: who made it, everything.
		return true
	}
	return st.IsDir() && st.Mode()&os.ModeSticky != 0
}

func rootUID(uid uint32) bool {
	return uid == 0 || uid == overflowUID && !userns.Initial()
}

// overflowUID is the owner the kernel shows for a user the namespace does
// not map (kernel.overflowuid, 65534 by default).
const overflowUID = 65534

// trusted says whether only root may change what path names: an absolute
// path whose every directory, and every symbolic link on the way and the
// directories holding it, only root may change.
func trusted(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s: not an absolute path", path)
	}
	for hops := 0; hops < 40; hops++ {
		if err := trustedDir(filepath.Dir(path), 0); err != nil {
			return err
		}
		st, err := os.Lstat(path)
		if err != nil {
			return err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			return nil
		}
		if !rootOnly(st) {
			return fmt.Errorf("%s: a link another user made", path)
		}
		to, err := os.Readlink(path)
		if err != nil {
			return err
		}
		if !filepath.IsAbs(to) {
			to = filepath.Join(filepath.Dir(path), to)
		}
		path = to
	}
	return fmt.Errorf("%s: too many links", path)
}

// trustedDir says whether only root may change directory d and those
// above it, following links among them (each link root's, in directories
// root's).
func trustedDir(d string, depth int) error {
	if depth > 40 {
		return fmt.Errorf("%s: too many links", d)
	}
	for ; ; d = filepath.Dir(d) {
		st, err := os.Lstat(d)
		if err != nil {
			return err
		}
		if st.Mode()&os.ModeSymlink != 0 {
			if !rootOnly(st) {
				return fmt.Errorf("%s: a link another user made", d)
			}
			to, err := os.Readlink(d)
			if err != nil {
				return err
			}
			if !filepath.IsAbs(to) {
				to = filepath.Join(filepath.Dir(d), to)
			}
			if err := trustedDir(to, depth+1); err != nil {
				return err
			}
		} else if !rootOnly(st) {
			return fmt.Errorf("%s: another user may change it", d)
		}
		if d == "/" {
			return nil
		}
	}
}

// openTrusted opens the program at path, for root, if only root may change
// it (trusted, and the file itself rootOnly and regular), and returns a
// path naming the descriptor it was judged through, which the program
// inherits (an interpreter of a script reads the script through it).
func openTrusted(path string) (string, func(), error) {
	if err := trusted(path); err != nil {
		return "", nil, err
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", nil, err
	}
	return openFD(real, func(st os.FileInfo) error {
		if !st.Mode().IsRegular() || !rootOnly(st) {
			return fmt.Errorf("%s: not a regular file only root may change", real)
		}
		return nil
	})
}

// openFD opens path (not following a final link) and, if check accepts
// what was opened, returns /proc/self/fd/N for it, inherited across exec.
func openFD(path string, check func(os.FileInfo) error) (string, func(), error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err == nil {
		err = check(st)
	}
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
	}
	if err != nil {
		f.Close()
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), func() { f.Close() }, nil
}

// openEnv accepts $Env unless it is the shim itself, or, for root, anything
// but an absolute path to a file named one of Files that only root may
// change, in directories only root may change: an environment kept across
// sudo or su must not choose what root runs (L2TPU_IP=/bin/sh would run a
// script of the user's named like the command, `ip addr` running ./addr;
// a user's hard link to env named ip would do the same). The file is judged
// and run through one descriptor (opened without following a final
// symlink), so that it cannot be swapped between the check and the exec.
func (p Program) openEnv(path string, self os.FileInfo) (string, func(), error) {
	fail := func(format string, a ...any) (string, func(), error) {
		return "", nil, fmt.Errorf("$%s=%s: "+format, append([]any{p.Env, path}, a...)...)
	}
	root := os.Geteuid() == 0
	rootRule := fmt.Sprintf("root runs only an absolute path to a root-owned file named %s that no one else may write", strings.Join(p.Files, " or "))
	var reason string
	out, done, err := openFD(path, func(st os.FileInfo) error {
		switch {
		case os.SameFile(st, self):
			reason = fmt.Sprintf("is the shim itself; name the system's %s", p.Name)
		case st.Mode()&os.ModeSymlink != 0: // O_PATH|O_NOFOLLOW opens the link itself
			reason = "a symlink; name the file itself"
		case !st.Mode().IsRegular():
			reason = "not a regular file"
		case root && (!filepath.IsAbs(path) || !slices.Contains(p.Files, filepath.Base(path)) || !rootOnly(st)):
			reason = rootRule
		case root:
			if err := trusted(path); err != nil {
				reason = fmt.Sprintf("%s, in directories only root may change: %v", rootRule, err)
			}
		}
		if reason != "" {
			return errors.New(reason)
		}
		return nil
	})
	switch {
	case reason != "":
		return fail("%s", reason)
	case err != nil:
		return fail("%w", err)
	}
	return out, done, nil
}

// Exec replaces this process with the program, given argv as it came (the
// shim's argv[0] is the program's: getopt's messages name it): its output
// and exit status are the caller's. It returns only on failure, having
// said why on stderr, with the status to exit with.
func (p Program) Exec(argv []string, stderr io.Writer, status int) int {
	path, done, err := p.Find()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", p.Name, err)
		return status
	}
	defer done()
	err = syscall.Exec(path, argv, os.Environ())
	fmt.Fprintf(stderr, "%s: exec %s: %v\n", p.Name, path, err)
	return status
}

// Run runs the program with args and returns its exit status (status if
// it could not be run, having said why on stderr).
func (p Program) Run(args []string, stdout, stderr io.Writer, status int) int {
	path, done, err := p.Find()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", p.Name, err)
		return status
	}
	defer done()
	cmd := exec.Command(path, args...)
	cmd.Args[0] = p.Name
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode()
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", p.Name, err)
		return status
	}
	return 0
}
