package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRecordedOptionsAreTheNamespaces: recorded options start a daemon of
// the namespace and boot they were recorded in (with -keep added), and no
// other: another namespace's cookie, another boot's ID, an older record or
// no cookie at all are refused.
func TestRecordedOptionsAreTheNamespaces(t *testing.T) {
	if bootID() == "" {
		t.Skip("no boot ID (/proc/sys/kernel/random/boot_id) on this kernel")
	}
	path := filepath.Join(t.TempDir(), "net-c7.options")
	args := []string{"-group", "users", "-state", "/var/lib/l2tpu/x"}
	if err := recordOptions(path, args, 0); err == nil {
		t.Fatal("recorded without a namespace cookie")
	}
	if err := recordOptions(path, args, 7); err != nil {
		t.Fatal(err)
	}
	got, err := recordedArgs(path, 7)
	if err != nil || !slices.Equal(got, append(slices.Clone(args), "-keep")) {
		t.Fatalf("the namespace's own: %q %v", got, err)
	}
	for _, c := range []struct {
		what   string
		cookie uint64
		edit   func(string) string
	}{
		{"another namespace", 8, nil},
		{"no cookie", 0, nil},
		{"another boot", 7, func(s string) string {
			return strings.Replace(s, `"boot_id":"`+bootID(), `"boot_id":"00000000-0000-0000-0000-000000000000`, 1)
		}},
		{"an older record", 7, func(s string) string { return strings.Replace(s, `"version":2`, `"version":1`, 1) }},
	} {
		if c.edit != nil {
			b, _ := os.ReadFile(path)
			p2 := path + ".edited"
			os.WriteFile(p2, []byte(c.edit(string(b))), 0o600)
			if got, err := recordedArgs(p2, c.cookie); err == nil {
				t.Errorf("%s: used %q", c.what, got)
			}
			continue
		}
		if got, err := recordedArgs(path, c.cookie); err == nil {
			t.Errorf("%s: used %q", c.what, got)
		}
	}
}
