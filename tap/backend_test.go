package tap

import (
	"errors"
	"strings"
	"testing"
)

// TestBackendText: the text forms are l2tpu daemon's -tap-backend words;
// any other word is an error that says what is accepted.
func TestBackendText(t *testing.T) {
	for b, w := range map[Backend]string{Auto: "auto", Water: "water", Unix: "unix"} {
		if got, err := b.MarshalText(); err != nil || string(got) != w || b.String() != w {
			t.Errorf("%d: %q %v, String %q; want %q", b, got, err, b.String(), w)
		}
		var x Backend = 7
		if err := x.UnmarshalText([]byte(w)); err != nil || x != b {
			t.Errorf("%q: %v %v", w, x, err)
		}
	}
	for _, w := range []string{"", "Unix", "wat", "tun", "backend?"} {
		x := Water
		err := x.UnmarshalText([]byte(w))
		if !errors.Is(err, ErrBadBackend) || !strings.Contains(err.Error(), "auto, water or unix") || x != Water {
			t.Errorf("%q: %v, left %v", w, err, x)
		}
	}
	if _, err := Backend(3).MarshalText(); !errors.Is(err, ErrBadBackend) {
		t.Errorf("backend 3 marshals: %v", err)
	}
}

// FuzzBackendText: what marshals reads back the same; what unmarshals is a
// word that marshals to itself; anything else is ErrBadBackend.
func FuzzBackendText(f *testing.F) {
	for _, w := range []string{"auto", "water", "unix", "", "UNIX", "backend?"} {
		f.Add(uint8(1), []byte(w))
	}
	f.Add(uint8(200), []byte("auto"))
	f.Fuzz(func(t *testing.T, v uint8, w []byte) {
		x := Backend(v)
		if b, err := x.MarshalText(); err == nil {
			var y Backend
			if err := y.UnmarshalText(b); err != nil || y != x {
				t.Fatalf("%d -> %q -> %d, %v", x, b, y, err)
			}
		} else if !errors.Is(err, ErrBadBackend) {
			t.Fatalf("%d: %v", x, err)
		}
		y := x
		if err := y.UnmarshalText(w); err != nil {
			if !errors.Is(err, ErrBadBackend) || y != x {
				t.Fatalf("%q: %v, left %d (was %d)", w, err, y, x)
			}
			return
		}
		if b, err := y.MarshalText(); err != nil || string(b) != string(w) {
			t.Fatalf("%q -> %d -> %q, %v", w, y, b, err)
		}
	})
}
