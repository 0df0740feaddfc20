package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// cpioWriter writes the "newc" format the kernel unpacks as initramfs.
type cpioWriter struct {
	w    *bufio.Writer
	ino  int
	dirs map[string]bool
}

func (c *cpioWriter) header(name string, mode, size int) {
	c.ino++
	fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	c.w.WriteString(name)
	c.w.WriteByte(0)
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) pad(n int) {
	for n%4 != 0 {
		c.w.WriteByte(0)
		n++
	}
}

func (c *cpioWriter) dir(name string) {
	name = strings.Trim(name, "/")
	if name == "" || name == "." || c.dirs[name] {
		return
	}
	c.dir(filepath.Dir(name))
	c.dirs[name] = true
	c.header(name, 0o040755, 0)
}

func (c *cpioWriter) file(name string, data []byte, mode int) {
	name = strings.Trim(name, "/")
	c.dir(filepath.Dir(name))
	c.header(name, 0o100000|mode, len(data))
	c.w.Write(data)
	c.pad(len(data))
}

func (c *cpioWriter) symlink(name, target string) {
	name = strings.Trim(name, "/")
	c.dir(filepath.Dir(name))
	c.header(name, 0o120777, len(target))
	c.w.WriteString(target)
	c.pad(len(target))
}

func (c *cpioWriter) copyFile(name, src string, mode int) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	c.file(name, data, mode)
	return nil
}

var lddLib = regexp.MustCompile(`(?m)(?:=> )?(/\S+) \(0x`)

// withLibs copies a dynamically linked binary and the libraries ldd lists.
func (c *cpioWriter) withLibs(name, src string) error {
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		return err
	}
	if err := c.copyFile(name, real, 0o755); err != nil {
		return err
	}
	out, err := exec.Command("ldd", real).Output()
	if err != nil {
		return nil // static
	}
	for _, m := range lddLib.FindAllStringSubmatch(string(out), -1) {
		lib := m[1]
		if c.dirs["__lib"+lib] {
			continue
		}
		c.dirs["__lib"+lib] = true
		if err := c.copyFile(lib, lib, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// buildInitrd writes the guest's root: the agent as /init, busybox and its
// applets, iproute2's ip (busybox's has no l2tp), and the modules.
func buildInitrd(out, agent, busybox string, modules []string) error {
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	c := &cpioWriter{w: bufio.NewWriterSize(f, 1<<20), dirs: map[string]bool{}}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc", "sbin", "usr/bin", "usr/sbin"} {
		c.dir(d)
	}
	if err := c.copyFile("init", agent, 0o755); err != nil {
		return err
	}
	if err := c.copyFile("bin/busybox", busybox, 0o755); err != nil {
		return err
	}
	applets, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return err
	}
	for _, a := range strings.Fields(string(applets)) {
		if a != "busybox" && a != "ip" && a != "init" {
			c.symlink("bin/"+a, "busybox")
		}
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return err
	}
	if err := c.withLibs("sbin/ip", ip); err != nil {
		return err
	}
	var order []string
	for _, m := range modules {
		base := filepath.Base(m)
		if err := c.copyFile("lib/modules/"+base, m, 0o644); err != nil {
			return err
		}
		order = append(order, base)
	}
	c.file("lib/modules/order", []byte(strings.Join(order, "\n")+"\n"), 0o644)
	c.header("TRAILER!!!", 0, 0)
	if err := c.w.Flush(); err != nil {
		return err
	}
	if _, err := io.WriteString(f, ""); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}
