package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// wireguard-go, the best-known Go userspace tunnel, as a userspace peer:
// built from the Go module proxy at a pinned version, configured with wg
// (Debian's wireguard-tools). Encrypted, so not like for like: the figures
// show what a Go dataplane of that design does on this machine.
const wireguardGoModule = "golang.zx2c4.com/wireguard@v0.0.0-20260522210424-ecfc5a8d5446"

// wireguardGoBin builds wireguard-go (once per output directory).
func wireguardGoBin() (string, error) {
	dir, err := filepath.Abs(filepath.Join(*out, "bin"))
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "wireguard")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.Command("go", "install", wireguardGoModule)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %v: %s", wireguardGoModule, err, o)
	}
	return bin, nil
}

func wireguardGoMissing() string {
	if _, err := exec.LookPath("wg"); err != nil {
		return "wg (wireguard-tools) is not installed"
	}
	if _, err := wireguardGoBin(); err != nil {
		return err.Error()
	}
	return ""
}

// wireguardGo is a WireGuard tunnel between the namespaces, wireguard-go at
// each end. Its control socket (/var/run/wireguard/NAME.sock) is not per
// network namespace, so each end's interface has a name of its own.
func wireguardGo() link {
	bin, err := wireguardGoBin()
	if err != nil {
		fatal(err)
	}
	dir := filepath.Join(*out, "wg")
	os.MkdirAll(dir, 0o700)
	var keys, pubs [2]string
	for i := range ends {
		k, err := exec.Command("wg", "genkey").Output()
		if err != nil {
			fatal(fmt.Errorf("wg genkey: %v", err))
		}
		keys[i] = filepath.Join(dir, fmt.Sprintf("key%d", i))
		os.WriteFile(keys[i], k, 0o600)
		c := exec.Command("wg", "pubkey")
		c.Stdin = strings.NewReader(string(k))
		p, err := c.Output()
		if err != nil {
			fatal(fmt.Errorf("wg pubkey: %v", err))
		}
		pubs[i] = strings.TrimSpace(string(p))
	}
	var cmds []*exec.Cmd
	for i, e := range ends {
		dev := prefix + []string{"wga", "wgb"}[i]
		cmd := start(in(e.ns, bin, "-f", dev)...)
		cmds = append(cmds, cmd)
		for k := 0; k < 100; k++ {
			if _, err := os.Stat("/var/run/wireguard/" + dev + ".sock"); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		must(in(e.ns, "wg", "set", dev, "private-key", keys[i], "listen-port", "51820",
			"peer", pubs[1-i], "allowed-ips", "0.0.0.0/0", "endpoint", e.remote+":51820")...)
		inner(e.ns, dev, e.inner)
	}
	return link{"203.0.113.2", func() {
		for _, c := range cmds {
			stop(c)
		}
		os.RemoveAll(dir)
	}, "wireguard-go " + strings.TrimPrefix(wireguardGoModule, "golang.zx2c4.com/wireguard@") + ", encrypted, MTU 1420", func() []int { return []int{cmds[0].Process.Pid, cmds[1].Process.Pid} }}
}
