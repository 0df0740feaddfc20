package tap

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

func ioctlPtr[T any](fd int, req uint, arg *T) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(arg)))
	if e != 0 {
		return e
	}
	return nil
}

// MaxMTU is the largest MTU the TUN driver gives a TAP device (MAX_MTU
// 65535 less the Ethernet header), and MaxFrame the longest frame such a
// device carries: MTU, Ethernet header and one VLAN tag.
const (
	MaxMTU   = 65535 - 14
	MaxFrame = MaxMTU + 14 + 4
)

// InterfaceIndex returns an interface's index by one ioctl: unlike
// net.InterfaceByName, which reads every link in the namespace, it costs the
// same with 10 and with 10,000 interfaces.
func InterfaceIndex(name string) (int, error) {
	idx := 0
	err := withIfreq(name, unix.SIOCGIFINDEX, nil, func(r *unix.Ifreq) { idx = int(r.Uint32()) })
	if err != nil {
		return 0, fmt.Errorf("interface %s: %w", name, err)
	}
	return idx, nil
}

// withIfreq runs an interface ioctl on a throwaway socket.
func withIfreq(name string, req uint, set func(*unix.Ifreq), get func(*unix.Ifreq)) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if set != nil {
		set(ifr)
	}
	if err := unix.IoctlIfreq(fd, req, ifr); err != nil {
		return err
	}
	if get != nil {
		get(ifr)
	}
	return nil
}

// SetMTU sets an interface's MTU.
func SetMTU(name string, mtu int) error {
	if err := withIfreq(name, unix.SIOCSIFMTU, func(r *unix.Ifreq) { r.SetUint32(uint32(mtu)) }, nil); err != nil {
		return fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
	}
	return nil
}

// LinkState is what the data path needs to know of an interface.
type LinkState struct {
	MTU int
	Up  bool
}

// State reads an interface's MTU and administrative state.
func State(name string) (LinkState, error) {
	var s LinkState
	if err := withIfreq(name, unix.SIOCGIFMTU, nil, func(r *unix.Ifreq) { s.MTU = int(r.Uint32()) }); err != nil {
		return s, err
	}
	err := withIfreq(name, unix.SIOCGIFFLAGS, nil, func(r *unix.Ifreq) { s.Up = r.Uint16()&unix.IFF_UP != 0 })
	return s, err
}

// SetUp brings an interface up or down.
func SetUp(name string, up bool) error {
	var flags uint16
	if err := withIfreq(name, unix.SIOCGIFFLAGS, nil, func(r *unix.Ifreq) { flags = r.Uint16() }); err != nil {
		return err
	}
	if up {
		flags |= unix.IFF_UP
	} else {
		flags &^= unix.IFF_UP
	}
	return withIfreq(name, unix.SIOCSIFFLAGS, func(r *unix.Ifreq) { r.SetUint16(flags) }, nil)
}
