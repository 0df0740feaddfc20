// Package netns runs work inside a network namespace. Sockets and TAP
// devices belong to the namespace of the thread that creates them and stay
// there, so a dataplane can serve a namespace while its goroutines run
// anywhere.
package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Path returns the bind-mount path ip netns uses for name.
func Path(name string) string { return filepath.Join("/run/netns", name) }

// Do runs fn on a thread that is in the namespace at path ("" means the
// current one). The thread returns to its namespace afterwards; if it
// cannot, the thread is left locked so the runtime retires it.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	defer target.Close()
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: %w", err)
	}
	defer self.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter %s: %w", path, err)
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with this goroutine.
		return fmt.Errorf("netns: return from %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Exec replaces the process with argv[0] run inside the namespace at path,
// as `ip -n NETNS` runs its command there: the calling thread enters the
// namespace, and execve makes it the whole process. It returns only on
// error.
func Exec(path string, argv, env []string) error {
	target, err := os.Open(path)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return &SetnsError{err}
	}
	err = unix.Exec("/proc/self/exe", argv, env)
	// Still here: the thread is in the other namespace; keep it locked so
	// that the runtime retires it rather than reuse it.
	runtime.LockOSThread()
	return err
}

// SetnsError: the namespace opened, but entering it failed (not a
// network namespace, or no privilege over it).
type SetnsError struct{ Err error }

func (e *SetnsError) Error() string { return "setns: " + e.Err.Error() }
func (e *SetnsError) Unwrap() error { return e.Err }

// PathOf is where ip finds the namespace named by -n: a name under
// /run/netns, or a path when it contains a slash.
func PathOf(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	return Path(name)
}
