package encap

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
)

// The text forms of Encap and L2Spec are ip l2tp's words, which the
// daemon's state journal records and the command line takes. Their JSON is
// still the kernel's number, as before they had a text form: the daemon's
// protocol (a client and a daemon of different releases meet during an
// upgrade) and version-1 state files carry it.

// encapWords are Encap's text forms, by value.
var encapWords = []string{EncapUDP: "udp", EncapIP: "ip"}

// l2specWords are L2Spec's text forms, by value.
var l2specWords = []string{L2SpecNone: "none", L2SpecDefault: "default"}

// wordOf is v's word in words, if it has one.
func wordOf[T ~uint8](words []string, v T) (string, bool) {
	if int(v) < len(words) && words[v] != "" {
		return words[v], true
	}
	return "", false
}

// valueOf is the value whose word is w, exactly (no case folding).
func valueOf[T ~uint8](words []string, w []byte) (T, bool) {
	for v, x := range words {
		if x != "" && x == string(w) {
			return T(v), true
		}
	}
	return 0, false
}

// MarshalText is "udp" or "ip"; any other value has no text form
// ([ErrBadEncap]).
func (e Encap) MarshalText() ([]byte, error) {
	w, ok := wordOf(encapWords, e)
	if !ok {
		return nil, fmt.Errorf("%w, not encap %d", ErrBadEncap, uint8(e))
	}
	return []byte(w), nil
}

// UnmarshalText takes "udp" or "ip", exactly as ip l2tp's encap does; any
// other word is an error that wraps [ErrBadEncap], and leaves e as it was.
func (e *Encap) UnmarshalText(b []byte) error {
	v, ok := valueOf[Encap](encapWords, b)
	if !ok {
		return fmt.Errorf("%w, not %q", ErrBadEncap, b)
	}
	*e = v
	return nil
}

// MarshalJSON is the kernel's number (0 for udp, 1 for ip).
func (e Encap) MarshalJSON() ([]byte, error) { return strconv.AppendUint(nil, uint64(e), 10), nil }

// UnmarshalJSON takes a number from 0 to 255, or null (no change), as a
// uint8 does; Validate says whether the kernel has it.
func (e *Encap) UnmarshalJSON(b []byte) error {
	return unmarshalUint8(b, (*uint8)(e), reflect.TypeFor[Encap]())
}

// MarshalText is "none" or "default"; any other value has no text form
// ([ErrBadL2Spec]).
func (l L2Spec) MarshalText() ([]byte, error) {
	w, ok := wordOf(l2specWords, l)
	if !ok {
		return nil, fmt.Errorf("%w, not l2spec_type %d", ErrBadL2Spec, uint8(l))
	}
	return []byte(w), nil
}

// UnmarshalText takes "none" or "default", exactly (ip l2tp's l2spec_type
// also takes them in any case: its parser folds the case first); any other
// word is an error that wraps [ErrBadL2Spec], and leaves l as it was.
func (l *L2Spec) UnmarshalText(b []byte) error {
	v, ok := valueOf[L2Spec](l2specWords, b)
	if !ok {
		return fmt.Errorf("%w, not %q", ErrBadL2Spec, b)
	}
	*l = v
	return nil
}

// MarshalJSON is the kernel's number (0 for none, 1 for default).
func (l L2Spec) MarshalJSON() ([]byte, error) { return strconv.AppendUint(nil, uint64(l), 10), nil }

// UnmarshalJSON takes a number from 0 to 255, or null (no change), as a
// uint8 does; Validate says whether the kernel has it.
func (l *L2Spec) UnmarshalJSON(b []byte) error {
	return unmarshalUint8(b, (*uint8)(l), reflect.TypeFor[L2Spec]())
}

// unmarshalUint8 is encoding/json's decoding of a JSON value into a uint8
// (whose type is t), its error included.
func unmarshalUint8(b []byte, v *uint8, t reflect.Type) error {
	if string(b) == "null" {
		return nil
	}
	n, err := strconv.ParseUint(string(b), 10, 8)
	if err != nil {
		what := "number " + string(b)
		switch {
		case len(b) > 0 && b[0] == '"':
			what = "string"
		case string(b) == "true" || string(b) == "false":
			what = "bool"
		case len(b) > 0 && b[0] == '{':
			what = "object"
		case len(b) > 0 && b[0] == '[':
			what = "array"
		}
		return &json.UnmarshalTypeError{Value: what, Type: t}
	}
	*v = uint8(n)
	return nil
}
