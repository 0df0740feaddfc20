package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

// The state file is a journal: a header line, then one JSON record a line,
// each appended and synced before the change it records is acknowledged, so
// an add costs the same at 10 and at 10,000 sessions. When the records
// outgrow what they describe, the journal is rewritten as a snapshot
// (written aside, synced, renamed over). A last line without its newline is
// a write cut short by a crash: never acknowledged, so ignored.
//
// Field names are explicit and the header carries a version: a newer l2tpu
// reads every older version, the version-1 JSON document included.

// stateVersion is the journal format written.
const stateVersion = 2

type header struct {
	Version int `json:"l2tpu_state"`
	// NetnsCookie is the namespace the state belongs to (0: unknown); a
	// journal of another namespace is never restored. Cookies count from
	// boot, so BootID says which boot it is of.
	NetnsCookie uint64 `json:"netns_cookie,omitempty"`
	BootID      string `json:"boot_id,omitempty"`
	// InitialNetns: the state is of the initial network namespace (PID
	// 1's), the one namespace that is the same one after a reboot; the
	// state of any other is of another namespace once the boot changed.
	InitialNetns bool `json:"initial_netns,omitempty"`
}

// initialNetns reports whether the caller's network namespace is PID 1's
// (false where PID 1's cannot be read).
func initialNetns() bool {
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return false
	}
	init, err := os.Readlink("/proc/1/ns/net")
	return err == nil && init == self
}

// bootID is the kernel's random ID of this boot ("" if unknown).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

// Record operations.
const (
	recTunnel     = "tunnel"
	recSession    = "session"
	recDelTunnel  = "del_tunnel"
	recDelSession = "del_session"
	recRename     = "rename"
	recNextNS     = "next_ns"
)

type record struct {
	Op        string         `json:"op"`
	Tunnel    *tunnelRecord  `json:"tunnel,omitempty"`
	Session   *sessionRecord `json:"session,omitempty"`
	TunnelID  uint32         `json:"tunnel_id,omitempty"`
	SessionID uint32         `json:"session_id,omitempty"`
	Interface string         `json:"interface,omitempty"`
	NextNS    []nextNSRecord `json:"next_ns,omitempty"`
	Exact     bool           `json:"exact,omitempty"`
}

// tunnelRecord and sessionRecord hold the enums as their text forms'
// words (encap.Encap's "udp" and "ip", encap.L2Spec's "none" and
// "default"), as strings: a record with a word this l2tpu does not know
// loads, and its config reports it (the tunnel or session pending with the
// reason, the rest restored).
type tunnelRecord struct {
	TunnelID       uint32     `json:"tunnel_id"`
	PeerTunnelID   uint32     `json:"peer_tunnel_id"`
	Encap          string     `json:"encap"`
	Local          netip.Addr `json:"local"`
	Remote         netip.Addr `json:"remote"`
	UDPSourcePort  uint16     `json:"udp_sport,omitempty"`
	UDPDestPort    uint16     `json:"udp_dport,omitempty"`
	UDPCsum        bool       `json:"udp_csum,omitempty"`
	UDP6ZeroCsumTx bool       `json:"udp6_zero_csum_tx,omitempty"`
	UDP6ZeroCsumRx bool       `json:"udp6_zero_csum_rx,omitempty"`
}

type sessionRecord struct {
	TunnelID         uint32       `json:"tunnel_id"`
	SessionID        uint32       `json:"session_id"`
	PeerSessionID    uint32       `json:"peer_session_id"`
	Name             string       `json:"name,omitempty"`
	Interface        string       `json:"interface"`
	Index            int          `json:"ifindex,omitempty"`
	Cookie           encap.Cookie `json:"cookie,omitzero"`
	PeerCookie       encap.Cookie `json:"peer_cookie,omitzero"`
	L2Spec           string       `json:"l2spec_type"`
	SendSeq          bool         `json:"send_seq,omitempty"`
	RecvSeq          bool         `json:"recv_seq,omitempty"`
	ReorderTimeoutNS int64        `json:"reorder_timeout_ns,omitempty"`
	// NextNS is the transmit sequence number at the last checkpoint;
	// Exact says a clean stop wrote it, not a periodic checkpoint.
	NextNS uint32 `json:"next_ns,omitempty"`
	Exact  bool   `json:"next_ns_exact,omitempty"`
}

type nextNSRecord struct {
	TunnelID  uint32 `json:"tunnel_id"`
	SessionID uint32 `json:"session_id"`
	NextNS    uint32 `json:"next_ns"`
}

// tunnelRecordOf records c. Its encapsulation is the text form's word;
// String gives the same, and "encap(N)" for a value with none (a
// version-1 file's), which config reports.
func tunnelRecordOf(c dataplane.TunnelConfig) *tunnelRecord {
	return &tunnelRecord{TunnelID: c.TunnelID, PeerTunnelID: c.PeerTunnelID, Encap: c.Encap.String(), Local: c.Local, Remote: c.Remote,
		UDPSourcePort: c.UDPSourcePort, UDPDestPort: c.UDPDestPort, UDPCsum: c.UDPCsum, UDP6ZeroCsumTx: c.UDP6ZeroCsumTx, UDP6ZeroCsumRx: c.UDP6ZeroCsumRx}
}

// encapIP reports whether the tunnel is IP-encapsulated.
func (r *tunnelRecord) encapIP() bool {
	var e encap.Encap
	return e.UnmarshalText([]byte(r.Encap)) == nil && e == encap.EncapIP
}

func (r *tunnelRecord) config() (dataplane.TunnelConfig, error) {
	c := dataplane.TunnelConfig{TunnelID: r.TunnelID, PeerTunnelID: r.PeerTunnelID, Local: r.Local, Remote: r.Remote,
		UDPSourcePort: r.UDPSourcePort, UDPDestPort: r.UDPDestPort, UDPCsum: r.UDPCsum, UDP6ZeroCsumTx: r.UDP6ZeroCsumTx, UDP6ZeroCsumRx: r.UDP6ZeroCsumRx}
	if err := c.Encap.UnmarshalText([]byte(r.Encap)); err != nil {
		return c, fmt.Errorf("tunnel %d: %w", r.TunnelID, err)
	}
	return c, c.Validate()
}

func sessionRecordOf(c dataplane.SessionConfig, ifname string, index int) *sessionRecord {
	return &sessionRecord{TunnelID: c.TunnelID, SessionID: c.SessionID, PeerSessionID: c.PeerSessionID, Name: c.Name, Interface: ifname, Index: index,
		Cookie: c.Cookie, PeerCookie: c.PeerCookie, L2Spec: c.L2Spec.String(), SendSeq: c.SendSeq, RecvSeq: c.RecvSeq,
		ReorderTimeoutNS: int64(c.ReorderTimeout)}
}

func (r *sessionRecord) config() (dataplane.SessionConfig, error) {
	c := dataplane.SessionConfig{TunnelID: r.TunnelID, SessionID: r.SessionID, PeerSessionID: r.PeerSessionID, Name: r.Name,
		Cookie: r.Cookie, PeerCookie: r.PeerCookie, SendSeq: r.SendSeq, RecvSeq: r.RecvSeq, ReorderTimeout: time.Duration(r.ReorderTimeoutNS)}
	if err := c.L2Spec.UnmarshalText([]byte(r.L2Spec)); err != nil {
		return c, fmt.Errorf("session %d/%d: %w", r.TunnelID, r.SessionID, err)
	}
	if r.Interface == "" {
		return c, fmt.Errorf("session %d/%d: no interface", r.TunnelID, r.SessionID)
	}
	return c, c.Validate()
}

// restore is what RestoreSession needs: after a crash the numbering resumes
// NSMargin ahead of the last checkpoint. A journal of an earlier boot (kept
// with -state on lasting storage) recreates the interfaces; within a boot
// an interface that is gone was deleted, and its session goes with it.
func (r *sessionRecord) restore(sameBoot bool) dataplane.Restore {
	x := dataplane.Restore{Interface: r.Interface, NextNS: r.NextNS, Recreate: !sameBoot}
	if sameBoot {
		x.Index = r.Index
	}
	if !r.Exact {
		x.NextNS += NSMargin
	}
	return x
}

// NSMargin is how far ahead of its last checkpoint a session restored after
// a crash resumes its transmit numbering: more than it can send between two
// checkpoints (one second), and well inside the peer's 2^23-1 window, so
// the peer resynchronises after a few packets instead of dropping
// everything as old.
const NSMargin = 1 << 22

type sessionKey struct{ tunnel, session uint32 }

// table is the recorded configuration: what a restart restores.
type table struct {
	tunnels  map[uint32]*tunnelRecord
	sessions map[sessionKey]*sessionRecord
	// bootID is the boot the recorded interfaces are of: this one's for a
	// new table; an earlier one's for a journal kept on lasting storage,
	// until every session is restored.
	bootID string
}

// sameBoot reports whether the recorded interfaces are of this boot (gone
// means deleted), not of an earlier one (gone means made anew).
func (t *table) sameBoot() bool { return t.bootID == "" || t.bootID == bootID() }

func newTable() *table {
	return &table{tunnels: map[uint32]*tunnelRecord{}, sessions: map[sessionKey]*sessionRecord{}, bootID: bootID()}
}

// apply replays one record. Records refer to what earlier ones made; one
// that does not fits no journal l2tpu writes.
func (t *table) apply(r *record) error {
	switch r.Op {
	case recTunnel:
		if r.Tunnel == nil {
			return errors.New("tunnel record without a tunnel")
		}
		t.tunnels[r.Tunnel.TunnelID] = r.Tunnel
	case recSession:
		if r.Session == nil {
			return errors.New("session record without a session")
		}
		t.sessions[sessionKey{r.Session.TunnelID, r.Session.SessionID}] = r.Session
	case recDelTunnel:
		delete(t.tunnels, r.TunnelID)
		for k := range t.sessions {
			if k.tunnel == r.TunnelID {
				delete(t.sessions, k)
			}
		}
	case recDelSession:
		delete(t.sessions, sessionKey{r.TunnelID, r.SessionID})
	case recRename:
		if x := t.sessions[sessionKey{r.TunnelID, r.SessionID}]; x != nil && r.Interface != "" {
			x.Interface = r.Interface
		}
	case recNextNS:
		for _, n := range r.NextNS {
			if x := t.sessions[sessionKey{n.TunnelID, n.SessionID}]; x != nil {
				x.NextNS, x.Exact = n.NextNS, r.Exact
			}
		}
	default:
		return fmt.Errorf("unknown record %q", r.Op)
	}
	return nil
}

// records is the table as a snapshot: tunnels, then sessions, by ID.
func (t *table) records() []record {
	var out []record
	for _, id := range slices.Sorted(maps.Keys(t.tunnels)) {
		out = append(out, record{Op: recTunnel, Tunnel: t.tunnels[id]})
	}
	keys := slices.Collect(maps.Keys(t.sessions))
	slices.SortFunc(keys, compareKeys)
	for _, k := range keys {
		out = append(out, record{Op: recSession, Session: t.sessions[k]})
	}
	return out
}

func (t *table) size() int { return len(t.tunnels) + len(t.sessions) }

// journal is the state file open for appending. Its lock serialises
// appends from every path (requests, checkpoints, interface events) and
// reads of the table they change.
type journal struct {
	path     string
	cookie   uint64
	mu       sync.Mutex
	f        *os.File
	size     int64 // bytes written and synced
	snapshot int64 // bytes of the last snapshot
	t        *table
}

// tunnel returns a copy of a recorded tunnel.
func (j *journal) tunnel(id uint32) (tunnelRecord, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.t.tunnels[id]
	if r == nil {
		return tunnelRecord{}, false
	}
	return *r, true
}

// session returns a copy of a recorded session.
func (j *journal) session(k sessionKey) (sessionRecord, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.t.sessions[k]
	if r == nil {
		return sessionRecord{}, false
	}
	return *r, true
}

// ErrEarlierBoot: the state file is of an earlier boot and of a namespace
// other than the initial one: namespace cookies count from boot, so nothing
// says it is this namespace's.
var ErrEarlierBoot = errors.New("the state file is of an earlier boot, and of a network namespace that cannot be this one")

// ErrForeignState: the state file belongs to another network namespace.
var ErrForeignState = errors.New("the state file belongs to another network namespace")

// loadJournal reads the state at path ("" or missing: empty). It returns
// the table and what was ignored (a torn last line), or an error that says
// what to do.
func loadJournal(path string, cookie uint64) (*table, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return newTable(), "", nil
	}
	if err != nil {
		return nil, "", err
	}
	t, note, err := parseJournal(b, cookie)
	if err != nil {
		return nil, "", fmt.Errorf("state file %s: %w", path, err)
	}
	return t, note, nil
}

// parseJournal reads a journal's bytes (any version).
func parseJournal(b []byte, cookie uint64) (*table, string, error) {
	t := newTable()
	damaged := func(line int, err error) error {
		return fmt.Errorf("damaged at line %d (%v): move it away to start empty", line, err)
	}
	if legacy(b) {
		if err := loadV1(b, t); err != nil {
			return nil, "", damaged(1, err)
		}
		return t, "", nil
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	var note string
	if last := lines[len(lines)-1]; len(last) == 0 {
		lines = lines[:len(lines)-1]
	} else if !bytes.HasSuffix(last, []byte("\n")) {
		note = fmt.Sprintf("ignored an unfinished last line (%d bytes): a write cut short, never acknowledged", len(last))
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		return t, note, nil
	}
	var h header
	if err := strictUnmarshal(lines[0], &h); err != nil || h.Version < 2 {
		return nil, "", damaged(1, fmt.Errorf("no l2tpu_state header: %v", err))
	}
	if h.Version > stateVersion {
		return nil, "", fmt.Errorf("version %d, newer than this l2tpu's (%d): run the l2tpu that wrote it, or move it away", h.Version, stateVersion)
	}
	t.bootID = h.BootID
	if !t.sameBoot() && !(h.InitialNetns && initialNetns()) {
		return nil, "", fmt.Errorf("%w (boot %s)", ErrEarlierBoot, h.BootID)
	}
	if t.sameBoot() && h.NetnsCookie != 0 && cookie != 0 && h.NetnsCookie != cookie {
		return nil, "", fmt.Errorf("%w (cookie %d, this one %d): move it away", ErrForeignState, h.NetnsCookie, cookie)
	}
	for i, l := range lines[1:] {
		var r record
		if err := strictUnmarshal(l, &r); err != nil {
			if i == len(lines)-2 && note == "" {
				// The last record, unreadable: a write cut short (a
				// block of zeros, a record's tail). Never acknowledged.
				note = fmt.Sprintf("ignored an unreadable last line (%v): a write cut short, never acknowledged", err)
				break
			}
			return nil, "", damaged(i+2, err)
		}
		if err := t.apply(&r); err != nil {
			return nil, "", damaged(i+2, err)
		}
	}
	return t, note, nil
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// openJournal writes the table as a fresh snapshot at path and opens it for
// appending.
func openJournal(path string, cookie uint64, t *table) (*journal, error) {
	j := &journal{path: path, cookie: cookie, t: t}
	err := j.compact()
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		// A full filesystem must not keep the state from being restored:
		// go on appending to the journal as it is (a change that finds no
		// room then fails, as it would anyway).
		oerr := j.reopen()
		if oerr == nil {
			return j, nil
		}
		if errors.Is(oerr, os.ErrNotExist) && len(t.tunnels) == 0 && len(t.sessions) == 0 {
			// Nothing to restore and no room for a first snapshot: the
			// daemon starts all the same, and the first change writes
			// the snapshot (or fails with the reason).
			return j, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return j, nil
}

// reopen takes the journal file as it is for appending, cut after its last
// whole record (a torn one is never followed by more); it needs no space.
func (j *journal) reopen() error {
	f, err := os.OpenFile(j.path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(f)
	if err == nil && len(b) == 0 {
		err = errors.New("empty")
	}
	if err != nil {
		f.Close()
		return err
	}
	end := int64(bytes.LastIndexByte(b, '\n') + 1)
	if err := f.Truncate(end); err != nil {
		f.Close()
		return err
	}
	j.f, j.size, j.snapshot = f, end, end
	return nil
}

// compact rewrites the journal as a snapshot of the table (j.mu held, or
// the journal not shared yet).
func (j *journal) compact() error {
	if err := os.MkdirAll(filepath.Dir(j.path), 0o700); err != nil {
		return err
	}
	var buf bytes.Buffer
	hb, _ := json.Marshal(header{Version: stateVersion, NetnsCookie: j.cookie, BootID: j.t.bootID, InitialNetns: initialNetns()})
	buf.Write(append(hb, '\n'))
	recs := j.t.records()
	for i := range recs {
		rb, err := json.Marshal(&recs[i])
		if err != nil {
			return err
		}
		buf.Write(append(rb, '\n'))
	}
	tmp := j.path + ".tmp"
	os.Remove(tmp) // a crashed compaction's; never follow a link planted there
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, j.path); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	syncDir(filepath.Dir(j.path))
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.size, j.snapshot = f, int64(buf.Len()), int64(buf.Len())
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// append writes and syncs one record, then applies it to the table. On
// failure the file is cut back to what it held, the table is unchanged, and
// the error (ENOSPC, EIO...) is returned.
func (j *journal) append(r record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		// None written yet (openJournal on a full filesystem): its
		// snapshot first.
		if err := j.compact(); err != nil {
			return err
		}
	}
	b, err := json.Marshal(&r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	n, err := j.f.WriteAt(b, j.size)
	if err == nil {
		err = j.f.Sync()
	}
	if err != nil {
		if n > 0 {
			j.f.Truncate(j.size)
		}
		return err
	}
	j.size += int64(len(b))
	if err := j.t.apply(&r); err != nil {
		return err
	}
	// Rewrite when the file is more than twice the snapshot it grew from
	// (and 1 MiB): each byte is then rewritten a bounded number of times,
	// and the file stays proportional to what it describes.
	if j.size > 2*j.snapshot+1<<20 {
		if err := j.compact(); err != nil {
			// The journal as it is stays valid: keep appending.
			return nil
		}
	}
	return nil
}

// sameBoot is table.sameBoot under the lock.
func (j *journal) sameBoot() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.t.sameBoot()
}

// thisBoot marks the recorded interfaces as this boot's, once every
// session of an earlier boot's journal is restored.
func (j *journal) thisBoot() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.t.sameBoot() {
		return nil
	}
	j.t.bootID = bootID()
	return j.compact()
}

func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	return j.f.Close()
}

// The version-1 state file: one JSON document with the dataplane's Go field
// names, written whole at every change, keyed by namespace inode.
type stateV1 struct {
	Tunnels  []dataplane.TunnelConfig `json:"tunnels"`
	Sessions []struct {
		Config    dataplane.SessionConfig `json:"config"`
		Interface string                  `json:"interface"`
		NextNS    uint32                  `json:"next_ns"`
		Exact     bool                    `json:"exact,omitempty"`
	} `json:"sessions"`
}

func legacy(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{' && !bytes.HasPrefix(b, []byte(`{"l2tpu_state"`))
}

func loadV1(b []byte, t *table) error {
	var s stateV1
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	for _, c := range s.Tunnels {
		t.tunnels[c.TunnelID] = tunnelRecordOf(c)
	}
	for _, x := range s.Sessions {
		r := sessionRecordOf(x.Config, x.Interface, 0)
		r.NextNS, r.Exact = x.NextNS, x.Exact
		t.sessions[sessionKey{r.TunnelID, r.SessionID}] = r
	}
	return nil
}
