package interop

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// privCase is one command run as an unprivileged user (uid 65534, no
// capabilities) by the kernel's ip l2tp in the VM and by l2tpu in ns U.
type privCase struct{ args string }

var privCases = []privCase{
	{"l2tp show tunnel"},
	{"l2tp show session"},
	{"-j l2tp show tunnel"},
	{"l2tp add tunnel tunnel_id 1 peer_tunnel_id 1 encap udp local 192.0.2.9 remote 192.0.2.10 udp_sport 1 udp_dport 2"},
	{"l2tp del tunnel tunnel_id 99"},
}

// checkPrivileges compares what an unprivileged user gets from the real
// kernel's ip l2tp and from l2tpu, byte for byte (stdout, stderr, exit
// status), with a tunnel configured by root on both: every L2TP operation,
// show included, needs CAP_NET_ADMIN. It returns the report's rows and the
// number of differences.
func (tp *topo) checkPrivileges(t *testing.T) ([]string, int) {
	if _, err := tp.vm.Run("ip l2tp add tunnel tunnel_id 99 peer_tunnel_id 99 encap udp local 192.0.2.2 remote 192.0.2.1 udp_sport 9999 udp_dport 9999"); err != nil {
		t.Fatal(err)
	}
	defer tp.vm.Run("ip l2tp del tunnel tunnel_id 99")
	if out, err := tp.l2tpu("add", "tunnel", "tunnel_id", "99", "peer_tunnel_id", "99", "encap", "udp", "local", "192.0.2.1", "remote", "192.0.2.2", "udp_sport", "9999", "udp_dport", "9999"); err != nil {
		t.Fatal(out, err)
	}
	defer tp.l2tpu("del", "tunnel", "tunnel_id", "99")
	// A copy of l2tpu that nobody may run (the test's directories are 0700).
	dir, err := os.MkdirTemp("", "l2tpu-priv")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "l2tpu")
	if err := copyFile(tp.bin, bin); err != nil {
		t.Fatal(err)
	}
	rows := []string{"| command (as uid 65534) | kernel's ip: status, stdout, stderr | l2tpu | same |", "|---|---|---|---|"}
	diffs := 0
	for _, c := range privCases {
		kout, kerr, krc, err := tp.vm.RunAs(65534, "/sbin/ip "+c.args)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("nsenter", append([]string{"--net=" + tp.u.Path(), "--setuid", "65534", "--setgid", "65534", bin}, strings.Fields(c.args)...)...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		rc := 0
		if err := cmd.Run(); err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatal(err)
			}
			rc = ee.ExitCode()
		}
		same := krc == rc && kout == o.String() && kerr == e.String()
		if !same {
			diffs++
			t.Errorf("as nobody, ip %s:\nkernel: %d %q %q\nl2tpu:  %d %q %q", c.args, krc, kout, kerr, rc, o.String(), e.String())
		}
		rows = append(rows, fmt.Sprintf("| `ip %s` | %d %q %q | %d %q %q | %v |", c.args, krc, kout, kerr, rc, o.String(), e.String(), same))
	}
	// Positive control: root sees the tunnels on both.
	if out, _ := tp.vm.Run("ip l2tp show tunnel"); !strings.Contains(out, "Tunnel 99,") {
		t.Errorf("kernel: root does not see tunnel 99:\n%s", out)
	}
	if out, _ := tp.l2tpu("show", "tunnel"); !strings.Contains(out, "Tunnel 99,") {
		t.Errorf("l2tpu: root does not see tunnel 99:\n%s", out)
	}
	return rows, diffs
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
