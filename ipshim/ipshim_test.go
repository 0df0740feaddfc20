package ipshim

import (
	"slices"
	"strings"
	"testing"
)

func TestScan(t *testing.T) {
	for _, tc := range []struct {
		args     string
		handOver bool
		netns    string
		batch    string
		others   string
		object   int
	}{
		{"l2tp show tunnel", false, "", "", "", 0},
		{"-j -n blue l2tp show", false, "blue", "", "-j", 3},
		{"--netns blue -s -s l2 show", false, "blue", "", "-s -s", 4},
		{"-n blue -force -batch f", false, "blue", "f", "-force", 5},
		{"-4 -d -b - ", false, "", "-", "-4 -d", 4},
		{"-f inet l2tp show", false, "", "", "-f inet", 2},
		{"link show", true, "", "", "", 0},
		{"l show", true, "", "", "", 0},
		{"-n", true, "", "", "", 0},
		{"-V", true, "", "", "", 0},
		{"-help", true, "", "", "", 0},
		{"-- l2tp show", false, "", "", "", 1},
		{"-j -- l2tp show", false, "", "", "-j", 2},
		{"-- -j l2tp show", true, "", "", "", 0},
		{"-r l2tp show", false, "", "", "-r", 1},
		{"-h -c -t l2tp show", false, "", "", "-h -c -t", 3},
		{"-color=never l2tp show", false, "", "", "-color=never", 1},
		{"-rc 65536 l2tp show", false, "", "", "-rc 65536", 2},
		{"-rc big l2tp show", true, "", "", "", 0},
		{"-family bogus l2tp show", true, "", "", "", 0},
		{"-bogus l2tp show", true, "", "", "", 0},
		{"- 3 l2tp show", false, "", "", "- 3", 2},
		{"", true, "", "", "", 0},
	} {
		g := scan(strings.Fields(tc.args))
		if g.handOver != tc.handOver {
			t.Errorf("%q: handOver %v", tc.args, g.handOver)
			continue
		}
		if tc.handOver {
			continue
		}
		if g.netns != tc.netns || g.batch != tc.batch || strings.Join(g.others, " ") != tc.others || g.object != tc.object {
			t.Errorf("%q: %+v", tc.args, g)
		}
	}
}

// FuzzScan: any arguments scan without a panic; what the shim serves has
// an l2tp object or a batch; -n and -batch never reach ip's options.
func FuzzScan(f *testing.F) {
	for _, s := range []string{"-j -n blue l2tp show", "-b f -n x -s", "-n", "--", "-batch - -netns a -netns b l2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, " ")
		g := scan(args)
		if g.object > len(args) {
			t.Fatalf("object %d of %d", g.object, len(args))
		}
		if g.handOver {
			return
		}
		if g.batch == "" && (g.object >= len(args) || !strings.HasPrefix("l2tp", args[g.object]) || len(args[g.object]) < 2) {
			t.Fatalf("serving %q without an l2tp object", s)
		}
		// Scanned again, ip's options hold no -batch or -n.
		if again := scan(append(slices.Clone(g.others), "l2tp")); again.batch != "" || again.netns != "" {
			t.Fatalf("%q: -batch or -n among ip's options %v", s, g.others)
		}
	})
}
