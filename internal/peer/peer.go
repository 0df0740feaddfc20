// Package peer identifies the process at the other end of a unix socket
// the way the kernel does: by the credentials and the pidfd it recorded at
// connect or listen (SO_PEERCRED, SO_PEERGROUPS, SO_PEERPIDFD), never by a
// PID looked up later, which the process may have left for another to take.
package peer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrGone: the process has exited since it connected.
var ErrGone = errors.New("the process at the other end has exited")

// Process is the peer of a unix stream socket.
type Process struct {
	// UID and GID are its credentials when it connected (or listened), in
	// the caller's user namespace (the overflow ID where unmapped).
	UID, GID uint32
	// Groups are its supplementary groups then.
	Groups []uint32
	pid    int // at connect, in the caller's PID namespace (0: not visible)
	pidfd  int // -1 on kernels without SO_PEERPIDFD (before 6.5)
}

// Of identifies the peer of c. Close releases what it holds.
func Of(c syscall.Conn) (*Process, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	p := &Process{pidfd: -1}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			serr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p.UID, p.GID, p.pid = cred.Uid, cred.Gid, int(cred.Pid)
		if g, err := peerGroups(int(fd)); err == nil {
			p.Groups = g
		}
		pidfd, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		switch {
		case err == nil:
			unix.CloseOnExec(pidfd)
			p.pidfd = pidfd
		case errors.Is(err, unix.ENOPROTOOPT):
			// An older kernel: the PID is all there is.
		case errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EINVAL):
			// Exited (and, from 6.5 to 6.15, reaped: EINVAL).
			serr = ErrGone
		default:
			serr = fmt.Errorf("SO_PEERPIDFD: %w", err)
		}
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return p, nil
}

func peerGroups(fd int) ([]uint32, error) {
	buf := make([]byte, 4*64)
	for {
		n := uint32(len(buf))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e == unix.ERANGE && int(n) > len(buf) {
			buf = make([]byte, n)
			continue
		}
		if e != 0 {
			return nil, e
		}
		g := make([]uint32, n/4)
		for i := range g {
			g[i] = binary.NativeEndian.Uint32(buf[4*i:])
		}
		return g, nil
	}
}

// Close releases the pidfd.
func (p *Process) Close() error {
	if p.pidfd < 0 {
		return nil
	}
	err := unix.Close(p.pidfd)
	p.pidfd = -1
	return err
}

// PID is the peer's PID in the caller's PID namespace (0 when it is not
// visible there), as it was at connect.
func (p *Process) PID() int { return p.pid }

// FD is the peer's pidfd (readable once it has exited), or -1 where the
// kernel has none.
func (p *Process) FD() int { return p.pidfd }

// Alive reports whether the peer still runs: by its pidfd, or where there
// is none, by its PID (which may by now be another process's).
func (p *Process) Alive() bool { return p.alive() }

// alive reports whether the peer still runs: by its pidfd, or where there
// is none, by its PID (which may by now be another process's).
func (p *Process) alive() bool {
	if p.pidfd >= 0 {
		return unix.PidfdSendSignal(p.pidfd, 0, nil, 0) != unix.ESRCH
	}
	return p.pid > 0 && unix.Kill(p.pid, 0) != unix.ESRCH
}

// open opens the peer's /proc directory, checked to be the peer's: the
// PID is confirmed to be still the peer's after the directory is open, and
// a /proc/PID directory stays with the process it was opened for.
func (p *Process) open() (*os.File, error) {
	if p.pid <= 0 {
		return nil, errors.New("its PID is not visible in this PID namespace")
	}
	d, err := os.Open("/proc/" + strconv.Itoa(p.pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrGone
		}
		return nil, err
	}
	if !p.alive() {
		d.Close()
		return nil, ErrGone
	}
	return d, nil
}

// Status is what /proc/PID/status says of the peer now.
type Status struct {
	EUID   int
	CapEff uint64
}

func readStatus(dir *os.File) (Status, error) {
	st := Status{EUID: -1}
	b, err := readAt(dir, "status")
	if err != nil {
		return st, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		switch {
		case k == "Uid" && len(f) >= 2:
			st.EUID, _ = strconv.Atoi(f[1])
		case k == "CapEff" && len(f) == 1:
			st.CapEff, _ = strconv.ParseUint(f[0], 16, 64)
		case k == "State" && len(f) >= 1 && (f[0] == "Z" || f[0] == "X"):
			// Exited, not yet reaped: its credentials are still there
			// to read, but it answers nothing any more.
			return st, ErrGone
		}
	}
	if st.EUID < 0 {
		return st, errors.New("no Uid in its status")
	}
	return st, nil
}

func readAt(dir *os.File, name string) ([]byte, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, ErrGone
		}
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, ErrGone
		}
		return nil, err
	}
	return buf.Bytes(), nil
}

// SameUser reports whether the peer's effective user now is the one it
// connected as (SO_PEERCRED): not so for a process that executed a
// set-user-ID program since.
func (p *Process) SameUser() (bool, error) {
	dir, err := p.open()
	if err != nil {
		return false, err
	}
	defer dir.Close()
	st, err := readStatus(dir)
	if err != nil {
		return false, err
	}
	return st.EUID == int(p.UID), nil
}

// OtherUserNS is NetAdmin's why for a peer the caller cannot judge: it runs
// in a user namespace whose ID map is not the caller's, which the caller
// may not look into.
const OtherUserNS = "it runs in another user namespace"

// NetAdmin reports whether the peer holds CAP_NET_ADMIN over the calling
// thread's network namespace now, as the kernel's ns_capable would judge
// it; when it does not, why says what it lacks. The peer's capabilities
// count only in its own user namespace: it must be the one that owns the
// network namespace or an ancestor of it (or the peer, in the parent, owns
// the user namespace on the way). Where the caller may not see the peer's
// user namespace (it may not ptrace it), the peer's ID map must be the
// caller's: a user namespace that a process without CAP_SETUID makes maps
// only its own ID.
func (p *Process) NetAdmin() (ok bool, why string, err error) {
	dir, err := p.open()
	if err != nil {
		return false, "", err
	}
	defer dir.Close()
	st, err := readStatus(dir)
	if err != nil {
		return false, "", err
	}
	capable := st.CapEff&(1<<unix.CAP_NET_ADMIN) != 0
	var peerNS unix.Stat_t
	err = unix.Fstatat(int(dir.Fd()), "ns/user", &peerNS, 0)
	switch {
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		theirs, err := readAt(dir, "uid_map")
		if err != nil {
			return false, "", err
		}
		ours, err := os.ReadFile("/proc/thread-self/uid_map")
		if err != nil {
			return false, "", err
		}
		if !bytes.Equal(theirs, ours) {
			return false, OtherUserNS, nil
		}
		if !capable {
			return false, "it lacks CAP_NET_ADMIN", nil
		}
		return true, "", nil
	case err != nil:
		return false, "", err
	}
	return walk(peerNS, st, capable)
}

// walk goes from the user namespace that owns the calling thread's network
// namespace up to the peer's (cap_capable's loop).
func walk(peerNS unix.Stat_t, st Status, capable bool) (bool, string, error) {
	net, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, "", err
	}
	cur, err := unix.IoctlRetInt(net, unix.NS_GET_USERNS)
	unix.Close(net)
	if err != nil {
		return false, "", fmt.Errorf("the network namespace's owner: %w", err)
	}
	defer func() { unix.Close(cur) }()
	for {
		var ns unix.Stat_t
		if err := unix.Fstat(cur, &ns); err != nil {
			return false, "", err
		}
		if same(ns, peerNS) {
			if !capable {
				return false, "it lacks CAP_NET_ADMIN", nil
			}
			return true, "", nil
		}
		parent, err := unix.IoctlRetInt(cur, unix.NS_GET_PARENT)
		if err != nil {
			// EPERM: the parent is beyond the caller's own user
			// namespace, where the peer cannot be either.
			return false, "its user namespace does not own this network namespace", nil
		}
		var pns unix.Stat_t
		if err := unix.Fstat(parent, &pns); err != nil {
			unix.Close(parent)
			return false, "", err
		}
		if same(pns, peerNS) {
			owner, err := unix.IoctlGetUint32(cur, unix.NS_GET_OWNER_UID)
			if err == nil && int(owner) == st.EUID {
				unix.Close(parent)
				return true, "", nil // the owner has every capability in it
			}
		}
		unix.Close(cur)
		cur = parent
	}
}

func same(a, b unix.Stat_t) bool { return a.Dev == b.Dev && a.Ino == b.Ino }

// Comm is the peer's command name, or "?".
func (p *Process) Comm() string {
	dir, err := p.open()
	if err != nil {
		return "?"
	}
	defer dir.Close()
	b, err := readAt(dir, "comm")
	if err != nil {
		return "?"
	}
	return strings.TrimRight(string(b), "\n")
}

// Signal sends sig to the peer, through its pidfd where there is one.
func (p *Process) Signal(sig unix.Signal) error {
	if p.pidfd >= 0 {
		return unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	}
	if p.pid <= 0 {
		return unix.ESRCH
	}
	return unix.Kill(p.pid, sig)
}

// Wait waits up to d for the peer to exit; it reports whether it did.
func (p *Process) Wait(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if p.pidfd >= 0 {
			// A pidfd polls readable once the process has exited.
			ms := max(0, int(time.Until(deadline)/time.Millisecond))
			fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, min(ms, 1000))
			if err == nil && n > 0 {
				return true
			}
		} else {
			if !p.alive() {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// Open returns the process pid, pinned by a pidfd, if it is still the one
// that started at start (field 22 of /proc/PID/stat, as Start reports).
func Open(pid int, start uint64) (*Process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, ErrGone
		}
		return nil, err
	}
	p := &Process{pid: pid, pidfd: fd}
	got, err := p.start()
	if err != nil || got != start {
		p.Close()
		if err == nil {
			err = ErrGone // the PID is another process's now
		}
		return nil, err
	}
	return p, nil
}

// Start is the start time of the peer (clock ticks after boot): with its
// PID it names one process for as long as the system runs.
func (p *Process) Start() (uint64, error) { return p.start() }

func (p *Process) start() (uint64, error) {
	dir, err := p.open()
	if err != nil {
		return 0, err
	}
	defer dir.Close()
	b, err := readAt(dir, "stat")
	if err != nil {
		return 0, err
	}
	return StartOf(b)
}

// StartOf parses the start time out of a /proc/PID/stat line.
func StartOf(stat []byte) (uint64, error) {
	// PID (COMM) STATE ...: COMM may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// Fields after COMM start at 3 (STATE); starttime is field 22.
	if len(f) < 20 {
		return 0, errors.New("malformed stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}
