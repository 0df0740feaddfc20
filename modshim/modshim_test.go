package modshim

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		args    string
		answer  bool
		remove  bool
		verbose bool
		modules []string
	}{
		{"l2tp_eth", true, false, false, []string{"l2tp_eth"}},
		{"l2tp-eth", true, false, false, []string{"l2tp_eth"}},
		{"-qv l2tp_core", true, false, true, []string{"l2tp_core"}},
		{"l2tp_ip -r", true, true, false, []string{"l2tp_ip"}},
		{"-a l2tp_ip l2tp_ip6", true, false, false, []string{"l2tp_ip", "l2tp_ip6"}},
		{"--remove --verbose l2tp_netlink l2tp_eth", true, true, true, []string{"l2tp_netlink", "l2tp_eth"}},
		{"-n --show -- l2tp_eth", true, false, false, []string{"l2tp_eth"}},
		{"", false, false, false, nil},
		{"-q", false, false, false, nil},
		{"l2tp_ip l2tp_ip6", false, false, false, nil}, // the second is a parameter
		{"l2tp_eth debug=1", false, false, false, nil},
		{"l2tp_ppp", false, false, false, nil},
		{"-a l2tp_eth l2tp_ppp", false, false, false, nil},
		{"-c", false, false, false, nil},
		{"-D l2tp_eth", false, false, false, nil},
		{"-va l2tp_eth -C /etc/x", false, false, false, nil},
		{"--rem l2tp_eth", false, false, false, nil},
		{"--first-time l2tp_eth", false, false, false, nil},
		{"-", false, false, false, nil},
		{"-- -r", false, false, false, nil},
	} {
		r, ok := parse(strings.Fields(c.args), false)
		if ok != c.answer {
			t.Errorf("%q: answered %v, want %v", c.args, ok, c.answer)
			continue
		}
		if ok && (r.remove != c.remove || r.verbose != c.verbose || !slices.Equal(r.modules, c.modules)) {
			t.Errorf("%q: %+v", c.args, r)
		}
	}
}

// TestParsePOSIX: with POSIXLY_CORRECT kmod's getopt stops at the first
// word, so an option after it is a parameter: the system's to judge.
func TestParsePOSIX(t *testing.T) {
	if _, ok := parse([]string{"l2tp_eth", "-r"}, true); ok {
		t.Error("answered an option after the module under POSIXLY_CORRECT")
	}
	if _, ok := parse([]string{"-r", "l2tp_eth"}, true); !ok {
		t.Error("options before the module refused under POSIXLY_CORRECT")
	}
	if _, ok := parse([]string{"l2tp_eth", "-r"}, false); !ok {
		t.Error("getopt permutes: the option after the module")
	}
}

// TestMainVerbose: the shim answers on stderr with -v only (the handed-over
// path execs the system's modprobe: cmd/l2tpu's TestModprobeShim).
func TestMainVerbose(t *testing.T) {
	var b bytes.Buffer
	if code := Main([]string{"modprobe", "-q", "l2tp_eth"}, &b); code != 0 || b.Len() != 0 {
		t.Fatalf("quiet: %d %q", code, b.String())
	}
	if code := Main([]string{"modprobe", "-rv", "l2tp_eth"}, &b); code != 0 || b.String() != "modprobe: l2tp_eth: provided by l2tpu in userspace, nothing removed\n" {
		t.Fatalf("verbose: %d %q", code, b.String())
	}
}

// FuzzParse: whatever the shim answers names only the L2TPv3 modules and
// no option but -a, -r, -q, -v, -n.
func FuzzParse(f *testing.F) {
	f.Add("-a\x00l2tp_eth\x00l2tp_ip")
	f.Add("l2tp_eth\x00-v")
	f.Add("--\x00l2tp-ip6")
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		r, ok := parse(args, false)
		if !ok {
			return
		}
		if len(r.modules) == 0 {
			t.Fatalf("%q: answered with no module", args)
		}
		for _, m := range r.modules {
			if !slices.Contains(Modules, m) {
				t.Fatalf("%q: answered for %q", args, m)
			}
		}
		for _, a := range args {
			if strings.HasPrefix(a, "-") && a != "--" && strings.Trim(a, "-arqvn") != "" &&
				!slices.Contains([]string{"--all", "--remove", "--quiet", "--verbose", "--dry-run", "--show"}, a) && !slices.Contains(Modules, strings.ReplaceAll(a, "-", "_")) {
				t.Fatalf("%q: answered with option %q", args, a)
			}
		}
	})
}
