package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
)

// RunDir holds runtime state: cleared at boot (tmpfs), like the kernel's.
const RunDir = "/run/l2tpu"

// NamespaceID names the caller's network namespace by its inode, so that
// several namespaces' daemons keep separate files.
func NamespaceID() (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return "", fmt.Errorf("network namespace: %w", err)
	}
	return fmt.Sprintf("net-%d", st.Ino), nil
}

// DefaultStatePath is the state file of this namespace's daemon.
func DefaultStatePath() (string, error) {
	id, err := NamespaceID()
	if err != nil {
		return "", err
	}
	return filepath.Join(RunDir, id+".json"), nil
}

// PIDPath is where this namespace's daemon writes its process ID.
func PIDPath() (string, error) {
	id, err := NamespaceID()
	if err != nil {
		return "", err
	}
	return filepath.Join(RunDir, id+".pid"), nil
}

// StopInNamespace ends the daemon serving the network namespace mounted at
// nsPath (as /run/netns/NAME), by the PID it recorded, waits for it, and
// removes its log and state files. For tools and tests that start daemons
// in namespaces they made.
func StopInNamespace(nsPath string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(nsPath, &st); err != nil {
		return err
	}
	base := filepath.Join(RunDir, fmt.Sprintf("net-%d", st.Ino))
	defer os.Remove(base + ".log")
	defer os.Remove(base + ".json")
	b, err := os.ReadFile(base + ".pid")
	if err != nil {
		return nil // none runs
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return nil
	}
	for i := 0; i < 250 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// state is what the daemon records to come back after a restart.
type state struct {
	Tunnels  []dataplane.TunnelConfig `json:"tunnels"`
	Sessions []savedSession           `json:"sessions"`
}

type savedSession struct {
	Config    dataplane.SessionConfig `json:"config"`
	Interface string                  `json:"interface"`
	// NextNS is the transmit sequence number at the last checkpoint;
	// Exact says it was saved by a clean stop, not a periodic checkpoint.
	NextNS uint32 `json:"next_ns"`
	Exact  bool   `json:"exact,omitempty"`
}

// NSMargin is how far ahead of its last checkpoint a session restored after
// a crash resumes its transmit numbering: more than it can send between two
// checkpoints (one second), and well inside the peer's 2^23-1 window, so
// the peer resynchronises after a few packets instead of dropping
// everything as old.
const NSMargin = 1 << 22

func (x savedSession) restore() dataplane.Restore {
	r := dataplane.Restore{Interface: x.Interface, NextNS: x.NextNS}
	if !x.Exact {
		r.NextNS += NSMargin
	}
	return r
}

func snapshot(m *dataplane.Manager, exact bool) state {
	var s state
	for _, t := range m.Tunnels() {
		s.Tunnels = append(s.Tunnels, t.Config)
	}
	for _, x := range m.Sessions() {
		s.Sessions = append(s.Sessions, savedSession{Config: x.Config, Interface: x.Interface, NextNS: x.NextNS, Exact: exact})
	}
	return s
}

// save writes the state atomically (write, fsync, rename).
func save(path string, s state) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func load(path string) (state, error) {
	var s state
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("state file %s is damaged (%v): move it away to start empty", path, err)
	}
	return s, nil
}
