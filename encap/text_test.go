package encap

import (
	"encoding"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestEnumText: the text forms are ip l2tp's words, which state journals
// written before the enums had text forms hold.
func TestEnumText(t *testing.T) {
	for _, tc := range []struct {
		v    interface{ MarshalText() ([]byte, error) }
		word string
	}{
		{EncapUDP, "udp"},
		{EncapIP, "ip"},
		{L2SpecNone, "none"},
		{L2SpecDefault, "default"},
	} {
		b, err := tc.v.MarshalText()
		if err != nil || string(b) != tc.word {
			t.Errorf("%v: %q %v, want %q", tc.v, b, err, tc.word)
		}
		if s := tc.v.(interface{ String() string }).String(); s != tc.word {
			t.Errorf("String %q, want %q", s, tc.word)
		}
	}
	var e Encap
	if err := e.UnmarshalText([]byte("ip")); err != nil || e != EncapIP {
		t.Errorf("ip: %v %v", e, err)
	}
	var l L2Spec = L2SpecDefault
	if err := l.UnmarshalText([]byte("none")); err != nil || l != L2SpecNone {
		t.Errorf("none: %v %v", l, err)
	}
}

// TestEnumTextErrors: a word that is not one is an error that says what
// is accepted, errors.Is-able, and changes nothing; a value with no word
// does not marshal.
func TestEnumTextErrors(t *testing.T) {
	for _, w := range []string{"", "UDP", "Ip", "u", "udp ", "ipv6", "encap(7)"} {
		e := EncapIP
		err := e.UnmarshalText([]byte(w))
		if !errors.Is(err, ErrBadEncap) || !strings.Contains(err.Error(), "udp or ip") || e != EncapIP {
			t.Errorf("encap %q: %v, left %v", w, err, e)
		}
	}
	// ip l2tp folds the case of l2spec_type, but in its parser (cli):
	// the text form is exact.
	for _, w := range []string{"", "Default", "NONE", "def", "l2spec(1)"} {
		l := L2SpecDefault
		err := l.UnmarshalText([]byte(w))
		if !errors.Is(err, ErrBadL2Spec) || !strings.Contains(err.Error(), "none or default") || l != L2SpecDefault {
			t.Errorf("l2spec_type %q: %v, left %v", w, err, l)
		}
	}
	if _, err := Encap(2).MarshalText(); !errors.Is(err, ErrBadEncap) {
		t.Errorf("encap 2 marshals: %v", err)
	}
	if _, err := L2Spec(9).MarshalText(); !errors.Is(err, ErrBadL2Spec) {
		t.Errorf("l2spec_type 9 marshals: %v", err)
	}
}

// TestEnumJSON: JSON stays the kernel's number, as the daemon's protocol
// and version-1 state files have it, with encoding/json's errors.
func TestEnumJSON(t *testing.T) {
	type cfg struct {
		Encap  Encap
		L2Spec L2Spec
	}
	b, err := json.Marshal(cfg{EncapIP, L2SpecDefault})
	if err != nil || string(b) != `{"Encap":1,"L2Spec":1}` {
		t.Fatalf("%s %v", b, err)
	}
	var c cfg
	if err := json.Unmarshal([]byte(`{"Encap":1,"L2Spec":0}`), &c); err != nil || c != (cfg{EncapIP, L2SpecNone}) {
		t.Fatalf("%+v %v", c, err)
	}
	// As a uint8: any of its numbers (Validate judges them), null
	// changes nothing.
	c = cfg{EncapIP, L2SpecDefault}
	if err := json.Unmarshal([]byte(`{"Encap":7,"L2Spec":null}`), &c); err != nil || c != (cfg{7, L2SpecDefault}) {
		t.Fatalf("%+v %v", c, err)
	}
	for in, want := range map[string]string{
		`{"Encap":256}`:     "json: cannot unmarshal number 256 into Go struct field cfg.Encap of type encap.Encap",
		`{"Encap":-1}`:      "json: cannot unmarshal number -1 into Go struct field cfg.Encap of type encap.Encap",
		`{"L2Spec":1.5}`:    "json: cannot unmarshal number 1.5 into Go struct field cfg.L2Spec of type encap.L2Spec",
		`{"Encap":"ip"}`:    "json: cannot unmarshal string into Go struct field cfg.Encap of type encap.Encap",
		`{"L2Spec":true}`:   "json: cannot unmarshal bool into Go struct field cfg.L2Spec of type encap.L2Spec",
		`{"L2Spec":[1]}`:    "json: cannot unmarshal array into Go struct field cfg.L2Spec of type encap.L2Spec",
		`{"Encap":{"a":1}}`: "json: cannot unmarshal object into Go struct field cfg.Encap of type encap.Encap",
	} {
		var c cfg
		var te *json.UnmarshalTypeError
		if err := json.Unmarshal([]byte(in), &c); !errors.As(err, &te) || err.Error() != want {
			t.Errorf("%s: %v, want %s", in, err, want)
		}
	}
}

// fuzzText checks one enum's text form: what marshals reads back the
// same; what unmarshals is a word that marshals to itself; what does not
// is an error wrapping bad, leaving v as it was.
func fuzzText[T comparable, P interface {
	*T
	encoding.TextUnmarshaler
}](t *testing.T, x T, w []byte, bad error) {
	if b, err := any(x).(encoding.TextMarshaler).MarshalText(); err == nil {
		var y T
		if err := P(&y).UnmarshalText(b); err != nil || y != x {
			t.Fatalf("%v -> %q -> %v, %v", x, b, y, err)
		}
	} else if !errors.Is(err, bad) {
		t.Fatalf("%v: %v", x, err)
	}
	y := x
	if err := P(&y).UnmarshalText(w); err != nil {
		if !errors.Is(err, bad) || y != x {
			t.Fatalf("%q: %v, left %v (was %v)", w, err, y, x)
		}
		return
	}
	if b, err := any(y).(encoding.TextMarshaler).MarshalText(); err != nil || string(b) != string(w) {
		t.Fatalf("%q -> %v -> %q, %v", w, y, b, err)
	}
}

func FuzzEnumText(f *testing.F) {
	for _, w := range []string{"udp", "ip", "none", "default", "", "UDP", "Default", "encap(2)"} {
		f.Add(uint8(0), []byte(w))
		f.Add(uint8(1), []byte(w))
	}
	f.Add(uint8(2), []byte("ip"))
	f.Add(uint8(255), []byte("none"))
	f.Fuzz(func(t *testing.T, v uint8, w []byte) {
		fuzzText(t, Encap(v), w, ErrBadEncap)
		fuzzText(t, L2Spec(v), w, ErrBadL2Spec)
	})
}
