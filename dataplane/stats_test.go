package dataplane

import (
	"reflect"
	"testing"
)

// TestCounters: the table lists every field of Stats once, in the
// struct's order, named by its JSON tag, and each getter reads its own
// field.
func TestCounters(t *testing.T) {
	st := reflect.TypeFor[Stats]()
	if st.NumField() != len(Counters) {
		t.Fatalf("Stats has %d fields, Counters %d", st.NumField(), len(Counters))
	}
	for i, c := range Counters {
		f := st.Field(i)
		if tag := f.Tag.Get("json"); c.Name != tag {
			t.Errorf("Counters[%d] is %q, Stats.%s is %q", i, c.Name, f.Name, tag)
		}
		var s Stats
		reflect.ValueOf(&s).Elem().Field(i).SetUint(uint64(i) + 1)
		for j, d := range Counters {
			want := uint64(0)
			if j == i {
				want = uint64(i) + 1
			}
			if got := d.Get(&s); got != want {
				t.Errorf("with Stats.%s set, %s reads %d, want %d", f.Name, d.Name, got, want)
			}
		}
	}
}
