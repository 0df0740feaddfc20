package sysprog

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTrusted: for root, a path is trusted when only root may change what
// it names; each negative case has its positive control beside it.
func TestTrusted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("judges root's trust: run as root")
	}
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{sh, "/bin/sh", "/usr/bin/env"} {
		if err := trusted(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	link := filepath.Join(dir, "prog")
	os.Symlink("/usr/bin/env", link)
	if err := trusted(link); err != nil {
		t.Errorf("a root's link in a root's directory: %v", err)
	}
	os.Chown(dir, 65534, 65534)
	if err := trusted(link); err == nil {
		t.Error("a link in another user's directory is trusted")
	}
	os.Chown(dir, 0, 0)
	os.Lchown(link, 65534, 65534)
	if err := trusted(link); err == nil {
		t.Error("another user's link is trusted")
	}
	if err := trusted("bin/sh"); err == nil {
		t.Error("a relative path is trusted")
	}
}
