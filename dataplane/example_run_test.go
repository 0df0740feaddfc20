package dataplane

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/l2tpu/l2tpu/internal/netns"
)

// TestExample runs the package example inside a namespace that has the
// addresses it uses, and checks what it prints.
func TestExample(t *testing.T) {
	e := newEnv(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	err = netns.Do(e.a.Path(), func() error { runExample(); return nil })
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := "l2tpeth0 mtu 1438 send_seq true rx_packets 0\n"; !bytes.Equal(out, []byte(want)) {
		t.Fatalf("example printed %q, want %q", out, want)
	}
}
