package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
)

// TestOptionsDefaults: what Options leave unset gets the daemon's
// defaults; what they set is kept.
func TestOptionsDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	if o.Logger == nil || o.RetryInterval != 10*time.Second || o.OrphanCheck != 10*time.Second {
		t.Fatalf("defaults: %+v", o)
	}
	set := Options{RetryInterval: time.Second, OrphanCheck: time.Minute, Group: "g", Keep: true}
	if o := set.withDefaults(); o.RetryInterval != time.Second || o.OrphanCheck != time.Minute || o.Group != "g" || !o.Keep {
		t.Fatalf("set: %+v", o)
	}
	s := newServer(o)
	if s.gid != -1 || s.log != o.Logger || s.pendingT == nil || s.pendingS == nil || s.lastNS == nil || s.byUser == nil {
		t.Fatalf("new server: %+v", s)
	}
	s.stopServe() // a no-op until Serve
}

// TestStatePathFor: -state wins; else the namespace's file where the
// namespace can be told apart; else no state is kept.
func TestStatePathFor(t *testing.T) {
	p := pathsFor("/run/l2tpu", "c7")
	for _, tc := range []struct {
		given  string
		stable bool
		want   string
	}{
		{"", true, p.State},
		{"", false, ""},
		{"/var/lib/l2tpu/s", true, "/var/lib/l2tpu/s"},
		{"/var/lib/l2tpu/s", false, "/var/lib/l2tpu/s"},
	} {
		if got := statePathFor(tc.given, tc.stable, p); got != tc.want {
			t.Errorf("%q %v: %q, want %q", tc.given, tc.stable, got, tc.want)
		}
	}
}

func TestOptionsSource(t *testing.T) {
	if s := optionsSource("1"); !strings.Contains(s, "record") {
		t.Errorf("recorded: %q", s)
	}
	for _, v := range []string{"", "0", "yes"} {
		if s := optionsSource(v); s != "the command line" {
			t.Errorf("%q: %q", v, s)
		}
	}
}

// TestDataplaneOptions: TAPs persist only where state is kept, belong to
// the daemon's user and group, and go to a keeper only where there is one
// (no typed nil: the dataplane tests Keeper against nil).
func TestDataplaneOptions(t *testing.T) {
	s := newServer(Options{}.withDefaults())
	s.gid = 5
	d := s.dataplaneOptions()
	if d.PersistTAP || d.Keeper != nil || d.Recorder != dataplane.Recorder(s) || d.Logger != s.opt.Logger {
		t.Fatalf("no state kept: %+v", d)
	}
	if d.Owner == nil || d.Owner.UID != os.Geteuid() || d.Owner.GID != 5 {
		t.Fatalf("owner %+v", d.Owner)
	}
	s.j = &journal{}
	s.keeper = &keeperClient{}
	if d := s.dataplaneOptions(); !d.PersistTAP || d.Keeper != dataplane.Keeper(s.keeper) {
		t.Fatalf("state kept: %+v", d)
	}
}

// TestOpenState: no path keeps nothing; a new path starts an empty
// journal; a journal of an earlier boot that cannot be this namespace's is
// set aside, not restored; a damaged one is refused and left in place.
func TestOpenState(t *testing.T) {
	dir := t.TempDir()
	s := newServer(Options{}.withDefaults())
	if tb, err := s.openState(""); err != nil || tb.size() != 0 || s.j != nil {
		t.Fatalf("no path: %v %v", err, s.j)
	}
	p := filepath.Join(dir, "s.state")
	tb, err := s.openState(p)
	if err != nil || tb.size() != 0 || s.j == nil {
		t.Fatalf("new: %v", err)
	}
	s.j.append(record{Op: recTunnel, Tunnel: tunnelRecordOf(testTunnel())})
	s.j.close()
	s = newServer(Options{}.withDefaults())
	if tb, err := s.openState(p); err != nil || tb.size() != 1 {
		t.Fatalf("again: %v", err)
	}
	s.j.close()

	earlier := filepath.Join(dir, "earlier.state")
	os.WriteFile(earlier, []byte(`{"l2tpu_state":2,"netns_cookie":7,"boot_id":"0f0f0f0f-earlier-boot"}`+"\n"+journalV2[1]+"\n"), 0o600)
	s = newServer(Options{}.withDefaults())
	tb, err = s.openState(earlier)
	if err != nil || tb.size() != 0 {
		t.Fatalf("earlier boot: %v %d", err, tb.size())
	}
	s.j.close()
	if b, err := os.ReadFile(earlier + ".earlier-boot"); err != nil || !strings.Contains(string(b), "earlier-boot") {
		t.Fatalf("not set aside: %v", err)
	}

	damaged := filepath.Join(dir, "damaged.state")
	os.WriteFile(damaged, []byte(journalV2[0]+"\n{garbage\n"+journalV2[1]+"\n"), 0o600)
	s = newServer(Options{}.withDefaults())
	if _, err := s.openState(damaged); err == nil || !strings.Contains(err.Error(), "move it away") || s.j != nil {
		t.Fatalf("damaged: %v", err)
	}
	if _, err := os.Stat(damaged); err != nil {
		t.Fatal(err)
	}
}

// TestWritePIDFile: the PID file holds this process's PID and start time;
// one that cannot be written leaves what was there and no file aside.
func TestWritePIDFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.pid")
	os.WriteFile(p, []byte("old"), 0o644)
	if err := writePIDFile(p); err != nil {
		t.Fatal(err)
	}
	var pid int
	var start uint64
	if b, _ := os.ReadFile(p); !strings.HasSuffix(string(b), "\n") {
		t.Fatalf("%q", b)
	} else if _, err := fmt.Sscan(string(b), &pid, &start); err != nil || pid != os.Getpid() || start == 0 {
		t.Fatalf("%q: %v", b, err)
	}
	if got, err := RecordedPID(p); err != nil || got != os.Getpid() {
		t.Fatalf("RecordedPID: %d %v", got, err)
	}
	// A directory in the way: the rename fails.
	in := filepath.Join(dir, "busy")
	os.MkdirAll(filepath.Join(in, "x"), 0o700)
	if err := writePIDFile(in); err == nil {
		t.Fatal("wrote over a directory")
	}
	if _, err := os.Stat(in + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("left aside: %v", err)
	}
	if err := writePIDFile(filepath.Join(dir, "none", "d.pid")); err == nil {
		t.Fatal("wrote in a missing directory")
	}
}

// TestKeptFor: what a restored state claims of what the keeper holds.
func TestKeptFor(t *testing.T) {
	tb, _, err := parseJournal([]byte(strings.Join(journalV2, "\n")+"\n"), 7)
	if err != nil {
		t.Fatal(err)
	}
	want := keptFor(tb)
	for name, claimed := range map[string]bool{
		keptControl:                    true,
		"tunnel/1":                     true,
		"tunnel/5":                     true,
		"tunnel/2":                     false,
		dataplane.KeptQueueName(12, 0): true,
		dataplane.KeptQueueName(12, 3): true,
		dataplane.KeptQueueName(13, 0): false,
		"ip/4":                         true,  // tunnel 1 is IP over IPv4
		"ip/6":                         false, // tunnel 5 is UDP over IPv6
		"something/else":               false,
	} {
		if want(name) != claimed {
			t.Errorf("%s: claimed %v", name, !claimed)
		}
	}
}
