package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/netns"
)

// soNetnsCookie is SO_NETNS_COOKIE (Linux 5.14; asm-generic value, which
// every architecture l2tpu builds for uses).
const soNetnsCookie = 71

// ErrNoCookie: the kernel gives no namespace cookie (before Linux 5.14).
var ErrNoCookie = errors.New("the kernel gives no network namespace cookie (SO_NETNS_COOKIE, Linux 5.14)")

// NamespaceCookie returns the kernel's cookie of the caller's network
// namespace: unlike its inode number, never reused while the machine runs,
// so the state of a namespace that is gone cannot be mistaken for that of a
// new one.
func NamespaceCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetnsCookie)
	if err != nil {
		if errors.Is(err, unix.ENOPROTOOPT) {
			return 0, ErrNoCookie
		}
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	return v, nil
}

// NamespaceID names the caller's network namespace for the runtime files:
// "net-c" and the namespace cookie, or where the kernel has none "net-i" and
// the inode number, which the kernel reuses: a daemon keyed by inode keeps no
// state across restarts (see Options.StatePath).
func NamespaceID() (id string, stable bool, err error) {
	c, err := NamespaceCookie()
	if err == nil {
		return fmt.Sprintf("net-c%d", c), true, nil
	}
	if !errors.Is(err, ErrNoCookie) {
		return "", false, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return "", false, fmt.Errorf("network namespace: %w", err)
	}
	return fmt.Sprintf("net-i%d", st.Ino), false, nil
}

// NamespaceIDAt is NamespaceID of the namespace mounted at path (as
// /run/netns/NAME).
func NamespaceIDAt(path string) (id string, err error) {
	err = netns.Do(path, func() (err error) {
		id, _, err = NamespaceID()
		return err
	})
	return id, err
}

// Paths are the runtime files of one namespace's daemon.
type Paths struct {
	Dir   string // RunDir or its fallback
	ID    string // NamespaceID
	State string // the journal (id.state)
	PID   string
	Log   string
	// Options are the options the daemon was started with (options.go).
	Options string
	// Keeper is the keeper's socket (keeper.go): in the runtime
	// directory, which only its owner can enter, so that nobody else can
	// take the name first.
	Keeper string
}

func pathsFor(dir, id string) Paths {
	base := filepath.Join(dir, id)
	return Paths{Dir: dir, ID: id, State: base + ".state", PID: base + ".pid", Log: base + ".log",
		Options: base + ".options", Keeper: base + ".keeper"}
}

// DefaultPaths are the runtime files of the caller's namespace's daemon.
func DefaultPaths() (Paths, error) {
	id, _, err := NamespaceID()
	if err != nil {
		return Paths{}, err
	}
	dir, err := RuntimeDir()
	if err != nil {
		return Paths{}, err
	}
	return pathsFor(dir, id), nil
}

// PathsAt are the runtime files of the daemon of the namespace at nsPath.
func PathsAt(nsPath string) (Paths, error) {
	id, err := NamespaceIDAt(nsPath)
	if err != nil {
		return Paths{}, err
	}
	dir, err := RuntimeDir()
	if err != nil {
		return Paths{}, err
	}
	return pathsFor(dir, id), nil
}

// removeRuntime removes a stopped daemon's runtime files.
func (p Paths) removeRuntime() {
	for _, f := range []string{p.State, p.State + ".tmp", p.PID, p.Log, p.Options, p.Options + ".tmp"} {
		os.Remove(f)
	}
}
