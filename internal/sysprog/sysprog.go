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
// for root, that only root may change. The path is valid until done is
// called.
func (p Program) Find() (path string, done func(), err error) {
	self, err := os.Stat("/proc/self/exe")
	if err != nil {
		return "", nil, err
	}
	if e := os.Getenv(p.Env); e != "" {
		return p.openEnv(e, self)
	}
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
		if os.Geteuid() == 0 && !rootOnly(st) {
			continue // root does not run what another user could change
		}
		found = append(found, c)
	}
	if len(found) == 0 {
		return "", nil, fmt.Errorf("%w: no system %s on PATH after the shim; install %s or set %s", ErrNotFound, p.Name, p.Install, p.Env)
	}
	return found[0], func() {}, nil
}

// rootOnly says whether only root may change the file.
func rootOnly(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && sys.Uid == 0 && st.Mode().Perm()&0o022 == 0
}

// openEnv accepts $Env unless it is the shim itself, or, for root, anything
// but an absolute path to a file named one of Files that only root may
// change: an environment kept across sudo or su must not choose what root
// runs (L2TPU_IP=/bin/sh would run a script of the user's named like the
// command, `ip addr` running ./addr). The file is judged and run through
// one descriptor (opened without following a final symlink), so that no one
// who can write its directory can swap it between the check and the exec;
// the path returned names that descriptor, which the program it runs
// inherits (an interpreter of a script reads the script through it).
func (p Program) openEnv(path string, self os.FileInfo) (string, func(), error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("$%s=%s: %w", p.Env, path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return "", nil, fmt.Errorf("$%s: %w", p.Env, err)
	}
	fail := func(format string, a ...any) (string, func(), error) {
		f.Close()
		return "", nil, fmt.Errorf("$%s=%s: "+format, append([]any{p.Env, path}, a...)...)
	}
	switch {
	case os.SameFile(st, self):
		return fail("is the shim itself; name the system's %s", p.Name)
	case st.Mode()&os.ModeSymlink != 0: // O_PATH|O_NOFOLLOW opens the link itself
		return fail("a symlink; name the file itself")
	case !st.Mode().IsRegular():
		return fail("not a regular file")
	case os.Geteuid() == 0 && (!filepath.IsAbs(path) || !slices.Contains(p.Files, filepath.Base(path)) || !rootOnly(st)):
		return fail("root runs only an absolute path to a root-owned file named %s that no one else may write", strings.Join(p.Files, " or "))
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		return fail("%v", err)
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), func() { f.Close() }, nil
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
