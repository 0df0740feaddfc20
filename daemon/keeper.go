package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/internal/peer"
	"github.com/l2tpu/l2tpu/internal/rtsched"
	"github.com/l2tpu/l2tpu/tap"
)

// The keeper is a small process of its own (`l2tpu daemon keeper -socket
// PATH`, PATH the namespace's Paths.Keeper, a seqpacket socket in the
// runtime directory, which no other user can enter) that
// holds a duplicate of every tunnel socket and session queue of its
// namespace's daemon, so that a daemon's crash releases nothing: no other
// user can bind a tunnel's port meanwhile, the frames that arrive wait in
// the sockets and queues, and the next daemon adopts them (what the kernel
// does by never letting go of its sockets). It answers one daemon at a
// time over a seqpacket socket, each judged as the daemon judges its
// callers (root with CAP_NET_ADMIN over the namespace), and it judges the
// keeper the same way before it hands it anything.
//
// Messages, one per packet: the keeper first sends "fd NAME" with the
// descriptor for each it holds, then "end"; the daemon sends "put NAME"
// with a descriptor, "drop NAME", "quit" (close everything and exit) or
// "bye" (a stop that keeps its state), each answered "ok" or "err TEXT".
// A daemon that goes without "bye" or "quit" died: the keeper turns the
// carrier of its interfaces off until the next one adopts them.

// keptControl is the name under which the keeper holds the daemon's
// control socket (@l2tpu), listening: after a crash the name is no one
// else's, and the next daemon adopts it.
const keptControl = "control"

// ErrNoKeeper: the daemon runs without a keeper; a crash then releases its
// sockets until it is restarted, as before keepers.
var ErrNoKeeper = errors.New("no descriptor keeper")

const keeperMsg = 512 // the longest message: a verb and a name

// RunKeeper is the keeper process, listening at path: it serves daemons
// until one says quit, or, with none connected, its network namespace is
// deleted and empty (the check as the daemon's, every orphanCheck).
func RunKeeper(log *slog.Logger, orphanCheck time.Duration, path string) error {
	// A daemon's threads are realtime, and so is what one of them starts:
	// the keeper, which only waits, is an ordinary process.
	if err := rtsched.Process(0); err != nil {
		log.Warn("keeper: cannot take the ordinary scheduling policy", "err", err)
	}
	ln, err := listenKeeper(path)
	if err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	defer ln.Close() // removes the socket file
	self, points := nsMounts()
	k := newKeeperState()
	defer k.close()
	go k.drain()
	log.Info("keeper ready", "pid", os.Getpid())
	for {
		ln.SetDeadline(time.Now().Add(orphanCheck))
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if len(points) > 0 && orphaned(self) {
					if held, why := heldElsewhere(self); held {
						log.Info("keeper: the network namespace is unmounted and empty, but held", "by", why)
						continue
					}
					if !orphaned(self) {
						continue // someone entered it meanwhile
					}
					// No daemon is left to (it died before the
					// namespace went): its files go with it, as the
					// kernel's state goes with its namespace.
					removeNamespaceFiles(log, strings.TrimSuffix(path, ".keeper"))
					log.Info("keeper: the network namespace was deleted and nothing else is in it: stopping")
					return nil
				}
				continue
			}
			return fmt.Errorf("keeper: %w", err)
		}
		quit := k.serve(log, c)
		c.Close()
		if quit {
			log.Info("keeper: asked to stop")
			return nil
		}
	}
}

// keeperState is what the keeper holds, and whether a daemon serves the
// control socket it holds.
type keeperState struct {
	mu      sync.Mutex
	changed *sync.Cond
	// Raw descriptors, never *os.File: a File of a non-blocking
	// descriptor joins this process's poller, which would then wake for
	// every frame that arrives in a held queue or socket; and its Fd()
	// would make the description, which the daemon shares, blocking.
	held    map[string]int
	serving bool          // a daemon is connected
	restart *peer.Process // a daemon restarting (executing itself): its process, until it is back or gone
	done    bool
}

func newKeeperState() *keeperState {
	k := &keeperState{held: map[string]int{}}
	k.changed = sync.NewCond(&k.mu)
	return k
}

func (k *keeperState) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.done = true
	for name, fd := range k.held {
		unix.Close(fd)
		delete(k.held, name)
	}
	if k.restart != nil {
		k.restart.Close()
		k.restart = nil
	}
	k.changed.Broadcast()
}

// drain closes, while no daemon serves it, every connection to the
// control socket the keeper holds: a caller who judged a daemon that then
// died or stopped sent a request no one will read, and must get no answer
// rather than a late one from the next daemon; nor may any user fill its
// queue so that no daemon can start. (Callers who find the listener gone
// send nothing.) A daemon executing itself again (restart) keeps what
// waits for the program that follows, for as long as its process lives.
func (k *keeperState) drain() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for !k.done {
		fd, ok := k.held[keptControl]
		wait := -1 // poll the control socket, or else the restarting process
		switch {
		case !ok || k.serving:
			k.changed.Wait()
			continue
		case k.restart != nil:
			if !k.restart.Alive() {
				k.restart.Close()
				k.restart = nil
				continue
			}
			fd, wait = k.restart.FD(), 1000
		}
		k.mu.Unlock()
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ := unix.Poll(pfd, wait)
		k.mu.Lock()
		if n > 0 && wait < 0 && !k.serving && k.restart == nil && k.held[keptControl] == fd {
			drainControl(fd)
		}
	}
}

// set updates the state under the lock and wakes the drainer.
func (k *keeperState) set(f func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f()
	k.changed.Broadcast()
}

// drainControl accepts and closes what waits on the control socket fd.
func drainControl(fd int) {
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 0); err != nil || n == 0 {
			return
		}
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return
		}
		unix.Close(c)
	}
}

// removeNamespaceFiles removes a gone namespace's runtime files by their
// common base (Paths without the suffixes): journal, one set aside from an
// earlier boot, options, PID file and log.
func removeNamespaceFiles(log *slog.Logger, base string) {
	for _, suffix := range []string{".state", ".state.tmp", ".state.earlier-boot", ".options", ".options.tmp", ".pid", ".pid.tmp", ".log"} {
		if err := os.Remove(base + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("keeper: a gone namespace's file", "err", err)
		}
	}
}

// serve serves one daemon until it goes; it reports whether it said quit
// (then everything held is closed).
func (k *keeperState) serve(log *slog.Logger, c *net.UnixConn) (quit bool) {
	p, err := peer.Of(c)
	if err != nil {
		return false
	}
	ok, why, err := p.NetAdmin()
	if err != nil || !ok || int(p.UID) != os.Geteuid() {
		log.Warn("keeper: refused a caller", "uid", p.UID, "pid", p.PID(), "why", why, "err", err)
		p.Close()
		c.Write([]byte("err refused"))
		return false
	}
	restarting := false
	k.set(func() {
		k.serving = true
		if k.restart != nil {
			k.restart.Close()
			k.restart = nil
		}
	})
	defer k.set(func() {
		k.serving = false
		if restarting {
			k.restart = p // what waits is for the program it executes
		} else {
			p.Close()
		}
	})
	k.mu.Lock()
	names := make([]string, 0, len(k.held))
	fds := make([]int, 0, len(k.held))
	for name, fd := range k.held {
		names, fds = append(names, name), append(fds, fd)
	}
	k.mu.Unlock()
	for i, name := range names {
		if _, _, err := c.WriteMsgUnix([]byte("fd "+name), unix.UnixRights(fds[i]), nil); err != nil {
			return false
		}
	}
	if _, err := c.Write([]byte("end")); err != nil {
		return false
	}
	buf, oob := make([]byte, keeperMsg), make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			// The daemon died: keep everything for the next, but say
			// that nothing moves frames meanwhile (bridges and routing
			// daemons read the carrier). What waits on its control
			// socket is closed (drain).
			k.mu.Lock()
			for name, fd := range k.held {
				if kind, _, _ := dataplane.ParseKept(name); kind == dataplane.KeptQueue && strings.HasSuffix(name, "/0") {
					tap.SetCarrierOf(fd, false)
				}
			}
			log.Warn("keeper: the daemon went without a word: holding everything for the next", "held", len(k.held))
			k.mu.Unlock()
			return false
		}
		got := receivedFDs(oob[:oobn])
		verb, name, _ := strings.Cut(string(buf[:n]), " ")
		answer := "ok"
		k.mu.Lock()
		switch {
		case verb == "put" && len(got) == 1 && name != "":
			if old, ok := k.held[name]; ok {
				unix.Close(old)
			}
			k.held[name] = got[0]
			got = nil
		case verb == "drop" && name != "":
			if fd, ok := k.held[name]; ok {
				unix.Close(fd)
				delete(k.held, name)
			}
		case verb == "bye" || verb == "restart":
			k.mu.Unlock()
			restarting = verb == "restart"
			c.Write([]byte(answer))
			return false // a stop that keeps its state: the next daemon follows
		case verb == "quit":
			for name, fd := range k.held {
				unix.Close(fd)
				delete(k.held, name)
			}
			k.mu.Unlock()
			c.Write([]byte(answer))
			return true
		default:
			answer = "err malformed message"
		}
		k.mu.Unlock()
		for _, fd := range got {
			unix.Close(fd)
		}
		if _, err := c.Write([]byte(answer)); err != nil {
			return false
		}
	}
}

// receivedFDs are the descriptors an SCM_RIGHTS message carried.
func receivedFDs(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var all []int
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			all = append(all, fd)
		}
	}
	return all
}

// receivedFiles are receivedFDs as files, for the daemon, which uses them.
func receivedFiles(oob []byte) []*os.File {
	var files []*os.File
	for _, fd := range receivedFDs(oob) {
		files = append(files, os.NewFile(uintptr(fd), "kept"))
	}
	return files
}

// keeperClient is the daemon's side: a dataplane.Keeper.
type keeperClient struct {
	mu   sync.Mutex
	pid  int           // the keeper's
	proc *peer.Process // the keeper, by the pidfd the kernel took when it listened (nil: none)
	c    *net.UnixConn
	kept map[string]*os.File // what the keeper held at start, until taken
}

var _ dataplane.Keeper = (*keeperClient)(nil)

// listenKeeper listens at path, a socket file in the runtime directory; a
// file there that nothing listens on is a dead keeper's, and goes.
func listenKeeper(path string) (*net.UnixListener, error) {
	addr := &net.UnixAddr{Name: path, Net: "unixpacket"}
	ln, err := net.ListenUnix("unixpacket", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		if c, derr := net.DialUnix("unixpacket", nil, addr); derr == nil {
			c.Close()
			return nil, err // a keeper listens there
		}
		os.Remove(path)
		ln, err = net.ListenUnix("unixpacket", addr)
	}
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// connectKeeper connects to the namespace's keeper at path, starting one
// (exe daemon keeper, logging to logf) where none runs, and receives what
// it holds. It returns ErrNoKeeper, wrapped with the reason, where it
// cannot: the daemon then runs without one.
func connectKeeper(exe string, logf *os.File, orphanCheck time.Duration, path string) (*keeperClient, error) {
	c, proc, err := dialKeeper(path)
	if errors.Is(err, ErrNotRunning) {
		cmd := exec.Command(exe, "daemon", "keeper", "-orphan-check", orphanCheck.String(), "-socket", path)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Dir = "/"
		cmd.Env = []string{}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("%w: cannot start one: %v", ErrNoKeeper, err)
		}
		go cmd.Wait() // reaped if it fails; it outlives the daemon otherwise
		for i := 0; i < 200 && errors.Is(err, ErrNotRunning); i++ {
			time.Sleep(10 * time.Millisecond)
			c, proc, err = dialKeeper(path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoKeeper, err)
	}
	// The keeper serves one daemon at a time: one that is stopping may
	// still hold it for a moment.
	kept, err := receiveHeld(c, 5*time.Second)
	if err != nil {
		c.Close()
		proc.Close()
		return nil, fmt.Errorf("%w: %v", ErrNoKeeper, err)
	}
	return &keeperClient{c: c, pid: proc.PID(), proc: proc, kept: kept}, nil
}

// receiveHeld reads what the keeper holds, up to its "end", within d.
func receiveHeld(c *net.UnixConn, d time.Duration) (map[string]*os.File, error) {
	kept := map[string]*os.File{}
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	buf, oob := make([]byte, keeperMsg), make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		files := receivedFiles(oob[:oobn])
		msg := string(buf[:n])
		if err == nil && msg == "end" {
			return kept, nil
		}
		name, ok := strings.CutPrefix(msg, "fd ")
		if err != nil || !ok || len(files) != 1 {
			for _, f := range files {
				f.Close()
			}
			for _, f := range kept {
				f.Close()
			}
			if err == nil {
				err = fmt.Errorf("unexpected %q", msg)
			}
			return nil, err
		}
		kept[name] = files[0]
	}
}

// dialKeeper connects to the keeper at path and judges it; it returns the
// keeper, which the caller closes.
func dialKeeper(path string) (*net.UnixConn, *peer.Process, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, nil, ErrNotRunning
		}
		return nil, nil, err
	}
	p, err := peer.Of(c)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	ok, why, err := p.NetAdmin()
	if err != nil || !ok || int(p.UID) != os.Geteuid() {
		c.Close()
		if err == nil {
			err = fmt.Errorf("pid %d (%s), uid %d, holds %s: %s", p.PID(), p.Comm(), p.UID, path, why)
		}
		p.Close()
		return nil, nil, err
	}
	return c, p, nil
}

// alivePID is the keeper's PID while it runs (by its pidfd, so that a PID
// it left for another process never counts as the keeper's), 0 otherwise.
func (k *keeperClient) alivePID() int {
	if k.proc == nil || !k.proc.Alive() {
		return 0
	}
	return k.pid
}

// ask sends one message and reads the answer.
func (k *keeperClient) ask(msg string, f *os.File) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c == nil {
		return ErrNoKeeper
	}
	var oob []byte
	if f != nil {
		// Not f.Fd(), which would make the description (shared with
		// the data path) blocking.
		rc, err := f.SyscallConn()
		if err != nil {
			return fmt.Errorf("keeper: %w", err)
		}
		rc.Control(func(fd uintptr) { oob = unix.UnixRights(int(fd)) })
	}
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := k.c.WriteMsgUnix([]byte(msg), oob, nil); err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	buf := make([]byte, keeperMsg)
	n, err := k.c.Read(buf)
	if err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	if a := string(buf[:n]); a != "ok" {
		return fmt.Errorf("keeper: %s", a)
	}
	return nil
}

func (k *keeperClient) Keep(name string, f *os.File) error {
	defer f.Close() // the keeper has its own once sent
	return k.ask("put "+name, f)
}

func (k *keeperClient) Take(name string) *os.File {
	k.mu.Lock()
	defer k.mu.Unlock()
	f := k.kept[name]
	delete(k.kept, name)
	return f
}

func (k *keeperClient) Drop(name string) error { return k.ask("drop "+name, nil) }

// dropUnclaimed makes the keeper let go of what it held at start that no
// restore took and want does not claim (a change cut short by a crash).
func (k *keeperClient) dropUnclaimed(want func(name string) bool) error {
	k.mu.Lock()
	var names []string
	for name, f := range k.kept {
		if !want(name) {
			names = append(names, name)
			f.Close()
			delete(k.kept, name)
		}
	}
	k.mu.Unlock()
	var errs []error
	for _, name := range names {
		errs = append(errs, k.Drop(name))
	}
	return errors.Join(errs...)
}

// quitKeeper makes the keeper at path, which serves no daemon, close
// everything and exit (a stop with no daemon left to ask).
func quitKeeper(path string) error {
	c, proc, err := dialKeeper(path)
	if err != nil {
		if errors.Is(err, ErrNotRunning) {
			os.Remove(path) // a killed keeper's socket file, if any
			return nil
		}
		return err
	}
	// Not within a second: it serves a daemon, which then is no
	// business of this stop's.
	kept, err := receiveHeld(c, time.Second)
	if err != nil {
		c.Close()
		proc.Close()
		return err
	}
	k := &keeperClient{c: c, proc: proc, kept: kept}
	defer k.close()
	return k.quit()
}

// carrierOff turns off the carrier of the interface with index ifindex
// through a queue the keeper held, if there is one: a session whose restore
// is pending carries nothing.
func (k *keeperClient) carrierOff(ifindex int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if f := k.kept[dataplane.KeptQueueName(ifindex, 0)]; f != nil {
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { tap.SetCarrierOf(int(fd), false) })
		}
	}
}

// quit makes the keeper close everything and exit (a stop that keeps
// nothing).
func (k *keeperClient) quit() error { return k.ask("quit", nil) }

// close leaves the keeper holding what it holds, for the next daemon,
// which follows at once (the carriers stay on).
func (k *keeperClient) close() { k.closeSaying("bye") }

// closeRestart is close for a daemon that executes itself again: what
// waits on the control socket is for the program that follows.
func (k *keeperClient) closeRestart() { k.closeSaying("restart") }

func (k *keeperClient) closeSaying(word string) {
	k.ask(word, nil)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
	if k.proc != nil {
		k.proc.Close()
		k.proc = nil
	}
	for name, f := range k.kept {
		f.Close()
		delete(k.kept, name)
	}
}
