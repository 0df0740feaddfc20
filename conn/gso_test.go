package conn

import (
	"fmt"
	"testing"
)

// TestGSORun: how writeGSO groups messages into GSO sends (no socket).
func TestGSORun(t *testing.T) {
	const off = 8
	msgs := func(sizes ...int) [][]byte {
		var out [][]byte
		for _, n := range sizes {
			out = append(out, make([]byte, off+n))
		}
		return out
	}
	runs := func(bufs [][]byte, gsoMax int) string {
		var out []string
		for i := 0; i < len(bufs); {
			j, size := gsoRun(bufs, i, off, gsoMax)
			out = append(out, fmt.Sprintf("%d×%d", j-i, size))
			i = j
		}
		return fmt.Sprint(out)
	}
	many := make([]int, 70)
	for i := range many {
		many[i] = 100
	}
	big := make([]int, 50)
	for i := range big {
		big[i] = 1400
	}
	for _, c := range []struct {
		bufs   [][]byte
		gsoMax int
		want   string
	}{
		{msgs(1400, 1400, 1400), 1472, "[3×1400]"},
		{msgs(1400, 1400, 600, 1400), 1472, "[3×1400 1×1400]"}, // a shorter one ends a run
		{msgs(600, 1400, 1400), 1472, "[1×600 2×1400]"},        // a longer one starts another
		{msgs(1500, 1500, 100), 1472, "[1×1500 1×1500 1×100]"}, // beyond the path: alone
		{msgs(many...), 1472, "[64×100 6×100]"},                // at most 64 segments
		{msgs(big...), 1472, "[46×1400 4×1400]"},               // at most 65,000 bytes
		{msgs(100), 1472, "[1×100]"},
		{msgs(0, 0, 5), 1472, "[2×0 1×5]"},
	} {
		if got := runs(c.bufs, c.gsoMax); got != c.want {
			t.Errorf("%d messages, gsoMax %d: %s, want %s", len(c.bufs), c.gsoMax, got, c.want)
		}
	}
}
