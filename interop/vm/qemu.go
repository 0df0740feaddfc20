package vm

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/internal/netns"
)

// Config of one VM.
type Config struct {
	NS       string   // host network namespace (must exist)
	TAP      string   // TAP created by QEMU in NS
	MAC      string   // guest NIC
	Addrs    []string // guest eth0 addresses (CIDR); the first IPv4 one is used for control
	TAPAddrs []string // host addresses on the TAP (CIDR)
	Accel    string   // auto, kvm or tcg
	RunDir   string   // console log etc.
	Memory   int      // MiB
}

// VM is a running guest.
type VM struct {
	cfg     Config
	cmd     *exec.Cmd
	ctl     string // agent address
	Accel   string
	Boot    time.Duration
	console string
}

// kvmUsable: /dev/kvm opens and the host is not PVM (a KVM that runs only
// PVM-enabled guest kernels: a stock kernel hangs there).
func kvmUsable() bool {
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return false
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Start boots the VM and waits for its agent.
func Start(img *Image, c Config) (*VM, error) {
	if c.Memory == 0 {
		c.Memory = 256
	}
	accel := c.Accel
	if accel == "" || accel == "auto" {
		accel = "tcg"
		if kvmUsable() {
			accel = "kvm"
		}
	}
	v, err := start(img, c, accel)
	if err != nil && accel == "kvm" && c.Accel != "kvm" {
		v, err = start(img, c, "tcg") // KVM that cannot run this kernel: emulate
	}
	return v, err
}

func start(img *Image, c Config, accel string) (*VM, error) {
	os.MkdirAll(c.RunDir, 0o755)
	console := filepath.Join(c.RunDir, "console.log")
	os.Remove(console)
	args := []string{"netns", "exec", c.NS, "qemu-system-x86_64",
		"-name", "l2tpu-interop", "-M", "pc", "-m", fmt.Sprint(c.Memory), "-nodefaults", "-no-user-config",
		"-nographic", "-no-reboot", "-accel", accel}
	if accel == "kvm" {
		args = append(args, "-cpu", "host")
	}
	if img.PVH {
		if _, err := os.Stat("/usr/share/qemu/qboot.rom"); err == nil {
			args = append(args, "-bios", "/usr/share/qemu/qboot.rom")
		}
	}
	args = append(args, "-kernel", img.Kernel, "-initrd", img.Initrd,
		"-append", "console=ttyS0 quiet panic=-1 rdinit=/init mitigations=off acpi=off i8042.noaux i8042.nokbd l2tpu.addr="+strings.Join(c.Addrs, ","),
		"-serial", "file:"+console,
		"-netdev", "tap,id=n0,ifname="+c.TAP+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,romfile=,mac="+c.MAC)
	cmd := exec.Command("ip", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	v := &VM{cfg: c, cmd: cmd, Accel: accel, console: console}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	for _, a := range c.Addrs {
		if ip, _, err := net.ParseCIDR(a); err == nil && ip.To4() != nil {
			v.ctl = net.JoinHostPort(ip.String(), "7777")
			break
		}
	}
	// The TAP appears when QEMU opens it: bring it up for the agent.
	limit := 60 * time.Second
	if accel == "kvm" {
		limit = 20 * time.Second
	}
	deadline := t0.Add(limit)
	tapUp := false
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return nil, fmt.Errorf("qemu exited: %s\n%s", stderr.String(), v.Console())
		default:
		}
		if exec.Command("ip", "-n", c.NS, "link", "set", c.TAP, "up").Run() == nil && !tapUp {
			tapUp = true
			for _, a := range c.TAPAddrs {
				args := []string{"-n", c.NS, "addr", "add", a, "dev", c.TAP}
				if strings.Contains(a, ":") {
					args = append(args, "nodad")
				}
				if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
					v.Stop()
					return nil, fmt.Errorf("tap address %s: %v %s", a, err, out)
				}
			}
		}
		if b, _ := os.ReadFile(console); bytes.Contains(b, []byte("L2TPU-AGENT-READY")) {
			if _, err := v.Run("true"); err == nil {
				v.Boot = time.Since(t0)
				return v, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	v.Stop()
	return nil, fmt.Errorf("guest not ready after %s (accel %s)\n%s", limit, accel, v.Console())
}

// Console is what the guest printed.
func (v *VM) Console() string {
	b, _ := os.ReadFile(v.console)
	return string(b)
}

// Stop ends QEMU (by its PID).
func (v *VM) Stop() {
	if v.cmd != nil && v.cmd.Process != nil {
		v.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() {
			for i := 0; i < 50; i++ {
				if v.cmd.Process.Signal(syscall.Signal(0)) != nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			close(done)
		}()
		<-done
		v.cmd.Process.Kill()
	}
}

// request is one exchange with the agent.
type request struct {
	Op      string `json:"op"`
	Cmd     string `json:"cmd,omitempty"`
	Iface   string `json:"iface,omitempty"`
	Frame   string `json:"frame,omitempty"`
	Addr    string `json:"addr,omitempty"`
	Bytes   int    `json:"bytes,omitempty"`
	Timeout int    `json:"timeout,omitempty"`
	UID     *int   `json:"uid,omitempty"`
}

type response struct {
	RC     int    `json:"rc"`
	Out    string `json:"out"`
	Bytes  int64  `json:"bytes"`
	Err    string `json:"err"`
	Stderr string `json:"stderr"`
}

func (v *VM) dial() (net.Conn, error) {
	var c net.Conn
	err := netns.Do("/run/netns/"+v.cfg.NS, func() (err error) {
		c, err = net.DialTimeout("tcp", v.ctl, 5*time.Second)
		return err
	})
	return c, err
}

func (v *VM) call(r request, wait time.Duration) (response, error) {
	c, err := v.dial()
	if err != nil {
		return response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if err := json.NewEncoder(c).Encode(r); err != nil {
		return response{}, err
	}
	var resp response
	err = json.NewDecoder(c).Decode(&resp)
	return resp, err
}

// Run runs a shell script in the guest and returns its output; a non-zero
// exit status is an error carrying the output.
func (v *VM) Run(script string) (string, error) {
	// busybox's sh runs its own applets first; its ip has no l2tp.
	script = "ip() { /sbin/ip \"$@\"; }\n" + script
	r, err := v.call(request{Op: "run", Cmd: script, Timeout: 60}, 70*time.Second)
	if err != nil {
		return "", err
	}
	if r.RC != 0 {
		return r.Out, fmt.Errorf("guest: %q: status %d %s\n%s", script, r.RC, r.Err, r.Out)
	}
	return r.Out, nil
}

// RunAs runs a shell script in the guest as user uid (no capabilities) and
// returns its stdout, stderr and exit status apart, whatever the status.
func (v *VM) RunAs(uid int, script string) (stdout, stderr string, rc int, err error) {
	r, err := v.call(request{Op: "run", Cmd: script, Timeout: 60, UID: &uid}, 70*time.Second)
	if err != nil {
		return "", "", 0, err
	}
	if r.RC < 0 {
		return r.Out, r.Stderr, r.RC, fmt.Errorf("guest: %q: %s", script, r.Err)
	}
	return r.Out, r.Stderr, r.RC, nil
}

// Inject makes the guest kernel transmit frame on iface.
func (v *VM) Inject(iface string, frame []byte) error {
	r, err := v.call(request{Op: "inject", Iface: iface, Frame: hex.EncodeToString(frame)}, 10*time.Second)
	if err == nil && r.RC != 0 {
		err = errors.New(r.Err)
	}
	return err
}

// Sink starts a TCP listener in the guest; the returned function waits for
// one connection to finish and reports the bytes received.
func (v *VM) Sink(addr string, timeout time.Duration) (func() (int64, error), error) {
	c, err := v.dial()
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout + 10*time.Second))
	if err := json.NewEncoder(c).Encode(request{Op: "sink", Addr: addr, Timeout: int(timeout.Seconds())}); err != nil {
		c.Close()
		return nil, err
	}
	dec := json.NewDecoder(c)
	var ready response
	if err := dec.Decode(&ready); err != nil || ready.RC != 0 {
		c.Close()
		return nil, fmt.Errorf("sink: %v %s", err, ready.Err)
	}
	return func() (int64, error) {
		defer c.Close()
		var r response
		if err := dec.Decode(&r); err != nil {
			return 0, err
		}
		if r.RC != 0 {
			return r.Bytes, errors.New(r.Err)
		}
		return r.Bytes, nil
	}, nil
}

// Send connects from the guest to addr and sends n bytes.
func (v *VM) Send(addr string, n int, timeout time.Duration) (int64, error) {
	r, err := v.call(request{Op: "send", Addr: addr, Bytes: n, Timeout: int(timeout.Seconds())}, timeout+10*time.Second)
	if err == nil && r.RC != 0 {
		err = errors.New(r.Err)
	}
	return r.Bytes, err
}
