package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestPrivateDir: the fallback runtime directory is used only when it is
// the caller's own and closed to others (made so if new); anything else
// is refused.
func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "fresh")
	if d, err := privateDir(fresh); err != nil || d != fresh {
		t.Fatalf("new directory: %q %v", d, err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o700 {
		t.Fatalf("made with mode %v", fi.Mode().Perm())
	}
	if _, err := privateDir(fresh); err != nil {
		t.Fatalf("its own directory again: %v", err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o755)
	link := filepath.Join(base, "link")
	os.Symlink(fresh, link)
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	others := filepath.Join(base, "others")
	os.Mkdir(others, 0o700)
	if err := os.Chown(others, 65534, 65534); err != nil && os.Geteuid() == 0 {
		t.Fatal(err)
	}
	cases := map[string]string{"mode 0755": open, "a symbolic link": link, "a file": file}
	if os.Geteuid() == 0 {
		cases["another user's"] = others
	}
	for what, dir := range cases {
		if _, err := privateDir(dir); !errors.Is(err, ErrRunDir) {
			t.Errorf("%s accepted: %v", what, err)
		}
	}
}
