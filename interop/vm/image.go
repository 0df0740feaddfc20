// Package vm boots the real Linux kernel (Debian's linux-image package) in
// a small QEMU VM whose only NIC is a TAP in a host network namespace, with
// the interop agent as /init, the kernel's L2TP modules, busybox and the
// host's iproute2 `ip`. The interop suite configures L2TP in it with
// `ip l2tp` and talks to it through the agent.
package vm

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Modules the guest needs (their dependencies are added).
var Modules = []string{"virtio_pci", "virtio_net", "l2tp_core", "l2tp_netlink", "l2tp_eth", "l2tp_ip", "l2tp_ip6", "l2tp_debugfs"}

// Image is a kernel and initramfs ready to boot.
type Image struct {
	Kernel  string // uncompressed vmlinux (PVH entry) or the bzImage
	PVH     bool
	Initrd  string
	Release string
}

// DefaultCache is where downloads and built images are kept between runs.
func DefaultCache() string {
	if d := os.Getenv("L2TPU_INTEROP_CACHE"); d != "" {
		return d
	}
	return "/var/cache/l2tpu-interop"
}

func run(name string, args ...string) ([]byte, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// fetchDeb downloads a Debian package with apt-get and unpacks it into dir.
func fetchDeb(pkg, dir string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "deb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("apt-get", "download", pkg)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		// A fresh machine may have no package lists yet.
		if _, uerr := run("apt-get", "update", "-qq"); uerr != nil {
			return fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
		}
		cmd = exec.Command("apt-get", "download", pkg)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s gave %d packages", pkg, len(debs))
	}
	if _, err := run("dpkg-deb", "-x", debs[0], tmp+"/x"); err != nil {
		return err
	}
	return os.Rename(tmp+"/x", dir)
}

// kernelPackage is the versioned package linux-image-amd64 depends on.
func kernelPackage() (string, error) {
	if p := os.Getenv("L2TPU_INTEROP_KERNEL_PKG"); p != "" {
		return p, nil
	}
	out, err := run("apt-cache", "depends", "linux-image-amd64")
	if err != nil || !bytes.Contains(out, []byte("Depends: linux-image-")) {
		run("apt-get", "update", "-qq")
		if out, err = run("apt-cache", "depends", "linux-image-amd64"); err != nil {
			return "", err
		}
	}
	for _, l := range strings.Split(string(out), "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(l), "Depends: "); ok && (strings.HasPrefix(p, "linux-image-6") || strings.HasPrefix(p, "linux-image-5")) {
			return p, nil
		}
	}
	return "", errors.New("cannot find the Debian kernel package linux-image-amd64 depends on")
}

// Build fetches (or finds in cache) the kernel and busybox and builds the
// initramfs around the agent binary.
func Build(cache, agent string) (*Image, error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	pkg, err := kernelPackage()
	if err != nil {
		return nil, err
	}
	kdir := filepath.Join(cache, pkg)
	if _, err := os.Stat(kdir); err != nil {
		if err := fetchDeb(pkg, kdir); err != nil {
			return nil, err
		}
	}
	bbdir := filepath.Join(cache, "busybox-static")
	if _, err := os.Stat(bbdir); err != nil {
		if err := fetchDeb("busybox-static", bbdir); err != nil {
			return nil, err
		}
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(kdir, "boot", "vmlinuz-*"))
	if len(vmlinuz) == 0 {
		return nil, fmt.Errorf("no vmlinuz in %s", kdir)
	}
	img := &Image{Release: strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-"), Kernel: vmlinuz[0]}
	if vmlinux, err := extractVmlinux(vmlinuz[0], filepath.Join(cache, "vmlinux-"+img.Release)); err == nil {
		img.Kernel, img.PVH = vmlinux, true
	}
	moddir := filepath.Join(kdir, "lib", "modules", img.Release)
	mods, err := resolveModules(moddir, Modules)
	if err != nil {
		return nil, err
	}
	img.Initrd = filepath.Join(cache, "initrd-"+img.Release+".cpio")
	return img, buildInitrd(img.Initrd, agent, filepath.Join(bbdir, "bin", "busybox"), mods)
}

// extractVmlinux decompresses the kernel inside a bzImage: booting an ELF
// vmlinux through QEMU's PVH entry skips seconds of in-guest decompression
// under emulation.
func extractVmlinux(bz, out string) (string, error) {
	if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
		return out, nil
	}
	data, err := os.ReadFile(bz)
	if err != nil {
		return "", err
	}
	for _, m := range []struct {
		magic []byte
		tool  []string
	}{{[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, []string{"xz", "-dc"}}, {[]byte{0x28, 0xb5, 0x2f, 0xfd}, []string{"zstd", "-dc"}}, {[]byte{0x1f, 0x8b, 8}, []string{"gzip", "-dc"}}} {
		i := bytes.Index(data, m.magic)
		if i < 0 {
			continue
		}
		cmd := exec.Command(m.tool[0], m.tool[1:]...)
		cmd.Stdin = bytes.NewReader(data[i:])
		raw, _ := cmd.Output() // trailing data after the stream is an error, not a problem
		if len(raw) > 4 && string(raw[:4]) == "\x7fELF" {
			if err := os.WriteFile(out, raw, 0o644); err != nil {
				return "", err
			}
			return out, nil
		}
	}
	return "", errors.New("no compressed ELF kernel found in " + bz)
}

// resolveModules returns the module files for names and their dependencies
// (each module's .modinfo "depends="), dependencies first.
func resolveModules(moddir string, names []string) ([]string, error) {
	paths := map[string]string{}
	filepath.Walk(filepath.Join(moddir, "kernel"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			paths[strings.ReplaceAll(strings.TrimSuffix(filepath.Base(p), ".ko"), "-", "_")] = p
		}
		return nil
	})
	builtin, _ := os.ReadFile(filepath.Join(moddir, "modules.builtin"))
	var order []string
	seen := map[string]bool{}
	var visit func(string) error
	visit = func(n string) error {
		n = strings.ReplaceAll(n, "-", "_")
		if seen[n] {
			return nil
		}
		seen[n] = true
		p, ok := paths[n]
		if !ok {
			if bytes.Contains(builtin, []byte("/"+n+".ko")) || bytes.Contains(builtin, []byte("/"+strings.ReplaceAll(n, "_", "-")+".ko")) {
				return nil
			}
			return fmt.Errorf("kernel module %s not found in %s", n, moddir)
		}
		deps, err := modDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		order = append(order, p)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func modDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, nil
	}
	data, err := s.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, d)
				}
			}
			sort.Strings(deps)
			return deps, nil
		}
	}
	return nil, nil
}
