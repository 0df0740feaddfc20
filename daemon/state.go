package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

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
