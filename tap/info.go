package tap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TunInfo is what rtnetlink tells of a TUN/TAP device: who owns it and how
// many queues are attached (by any process).
type TunInfo struct {
	Name   string
	Owner  int // -1: none
	Queues int // attached queues (IFLA_TUN_NUM_QUEUES)
	Tap    bool
}

// ErrNotTun: the interface is not a TUN/TAP device.
var ErrNotTun = errors.New("not a TUN/TAP device")

// Info asks rtnetlink about the TUN/TAP device with this index (one
// request for that link, not a dump).
func Info(index int) (TunInfo, error) {
	info := TunInfo{Owner: -1}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return info, fmt.Errorf("rtnetlink: %w", err)
	}
	defer unix.Close(fd)
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg)
	h := (*unix.NlMsghdr)(unsafe.Pointer(&req[0]))
	h.Len, h.Type, h.Flags, h.Seq = uint32(len(req)), unix.RTM_GETLINK, unix.NLM_F_REQUEST, 1
	ifi := (*unix.IfInfomsg)(unsafe.Pointer(&req[unix.NLMSG_HDRLEN]))
	ifi.Family, ifi.Index = unix.AF_UNSPEC, int32(index)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return info, fmt.Errorf("rtnetlink: %w", err)
	}
	buf := make([]byte, 16<<10)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return info, fmt.Errorf("rtnetlink: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return info, fmt.Errorf("rtnetlink: %w", err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return info, fmt.Errorf("interface %d: %w", index, syscall.Errno(-e))
				}
			}
		case unix.RTM_NEWLINK:
			attrs, err := syscall.ParseNetlinkRouteAttr(&m)
			if err != nil {
				return info, fmt.Errorf("rtnetlink: %w", err)
			}
			var linkinfo []byte
			for _, a := range attrs {
				switch a.Attr.Type {
				case unix.IFLA_IFNAME:
					info.Name = string(bytes.TrimRight(a.Value, "\x00"))
				case unix.IFLA_LINKINFO:
					linkinfo = a.Value
				}
			}
			return parseLinkInfo(linkinfo, info)
		}
	}
	return info, fmt.Errorf("interface %d: no answer", index)
}

// parseLinkInfo reads IFLA_INFO_KIND "tun" and its IFLA_INFO_DATA.
func parseLinkInfo(b []byte, info TunInfo) (TunInfo, error) {
	tun := false
	var data []byte
	for _, a := range nested(b) {
		switch a.typ {
		case unix.IFLA_INFO_KIND:
			tun = string(bytes.TrimRight(a.val, "\x00")) == "tun"
		case unix.IFLA_INFO_DATA:
			data = a.val
		}
	}
	if !tun {
		return info, ErrNotTun
	}
	for _, a := range nested(data) {
		if len(a.val) < 1 {
			continue
		}
		switch a.typ {
		case unix.IFLA_TUN_OWNER:
			if len(a.val) >= 4 {
				if o := binary.NativeEndian.Uint32(a.val); o != 0xffffffff {
					info.Owner = int(o)
				}
			}
		case unix.IFLA_TUN_NUM_QUEUES:
			if len(a.val) >= 4 {
				info.Queues = int(binary.NativeEndian.Uint32(a.val))
			}
		case unix.IFLA_TUN_TYPE:
			info.Tap = a.val[0] == 2 // IFF_TAP
		}
	}
	return info, nil
}

type attr struct {
	typ uint16
	val []byte
}

// nested splits a run of netlink attributes.
func nested(b []byte) []attr {
	var out []attr
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		t := binary.NativeEndian.Uint16(b[2:]) &^ unix.NLA_F_NESTED
		if l < 4 || l > len(b) {
			break
		}
		out = append(out, attr{t, b[4:l]})
		b = b[min((l+3)&^3, len(b)):]
	}
	return out
}
