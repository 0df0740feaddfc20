package tap

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// With IFF_VNET_HDR every frame on the TAP fd is preceded by a struct
// virtio_net_hdr, and with TUNSETOFFLOAD the frames may be GSO super-frames
// in both directions. Read cuts the super-frames the stack hands over
// (segment.go); Write coalesces runs of one flow into super-frames the stack
// takes at once (coalesce.go). Both work on the same parse (seg) and fix
// headers with the same code (fixHeaders); what differs between TCP and UDP
// is data (transport).

// virtio_net_hdr (linux/virtio_net.h).
const (
	vnetHdrLen        = 10
	vnetFlagNeedsCsum = 1
	vnetGSONone       = 0
	vnetGSOTCPv4      = 1
	vnetGSOUDPL4      = 5 // Linux 6.2
	vnetGSOTCPv6      = 4
	vnetGSOECN        = 0x80
)

// TUN offload flags (linux/if_tun.h).
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
	tunFUSO4 = 0x20 // Linux 6.2
	tunFUSO6 = 0x40
)

const (
	gsoMaxSize = 65535 // IP length fields
	gsoMaxSegs = 64
	// maxMergeHdr bounds the headers (Ethernet, VLAN tags, IP, TCP) of a
	// super-frame: they are copied ahead of every segment, or of the
	// gathered payloads.
	maxMergeHdr = 192
)

// setOffload turns on checksum offload, TSO and, where the kernel has it
// (6.2 on; older ones refuse unknown flags with EINVAL), USO. It reports
// whether USO is on: only then do writes carry coalesced UDP.
func setOffload(fd int) (uso bool, err error) {
	base := tunFCsum | tunFTSO4 | tunFTSO6
	if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, base|tunFUSO4|tunFUSO6) == nil {
		return true, nil
	}
	return false, unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, base)
}

// transport is what segmentation and coalescing need to know of TCP or UDP.
type transport struct {
	proto      byte
	gso4, gso6 uint8 // virtio GSO types
	csum       int   // offset of the checksum in the header
	length     int   // offset of the length field, 0 when there is none
	// vary are the header bytes, [from, to), in which the segments of one
	// flow differ; all others must match to coalesce.
	vary [][2]int
	// stream: sequence numbers and flags (TCP). Otherwise datagrams
	// (UDP), whose checksum 0 means none.
	stream bool
}

var (
	tcp = transport{proto: unix.IPPROTO_TCP, gso4: vnetGSOTCPv4, gso6: vnetGSOTCPv6, csum: 16,
		vary: [][2]int{{4, 8}, {13, 14}, {16, 18}}, stream: true} // seq, flags, checksum
	udp = transport{proto: unix.IPPROTO_UDP, gso4: vnetGSOUDPL4, gso6: vnetGSOUDPL4, csum: 6, length: 4,
		vary: [][2]int{{4, 8}}} // length, checksum
)

// byGSO is the transport a virtio GSO type carries.
func byGSO(gso uint8) *transport {
	switch gso {
	case vnetGSOTCPv4, vnetGSOTCPv6:
		return &tcp
	case vnetGSOUDPL4:
		return &udp
	}
	return nil
}

func (t *transport) gso(v6 bool) uint8 {
	if v6 {
		return t.gso6
	}
	return t.gso4
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80
)

// l3 finds an Ethernet frame's network header past up to two VLAN tags
// (QinQ): its offset and EtherType.
func l3(f []byte) (off int, et uint16, ok bool) {
	if len(f) < 14 {
		return 0, 0, false
	}
	off, et = 14, binary.BigEndian.Uint16(f[12:])
	for et == 0x8100 || et == 0x88a8 {
		if len(f) < off+4 || off >= 14+2*4 {
			return 0, 0, false
		}
		et = binary.BigEndian.Uint16(f[off+2:])
		off += 4
	}
	return off, et, true
}

// seg is a parsed TCP or UDP frame: one that may be coalesced, or the
// headers of a super-frame to segment.
type seg struct {
	t                *transport
	l3, l4, hdr, end int // offsets: IP, TCP/UDP, payload, end of IP packet
	v6               bool
	seq              uint32 // TCP
	flags            byte   // TCP
}

func (s *seg) payload() int { return s.end - s.hdr }

// parse parses an Ethernet frame (up to two VLAN tags) carrying IPv4
// without options or fragments, or IPv6 without extension headers, and in
// it TCP or UDP with a payload, headers at most maxMergeHdr long.
func parse(f []byte) (s seg, ok bool) {
	l3, et, ok := l3(f)
	if !ok {
		return s, false
	}
	s.l3 = l3
	var proto byte
	switch et {
	case 0x0800:
		if len(f) < l3+20 || f[l3] != 0x45 || binary.BigEndian.Uint16(f[l3+6:])&0x3fff != 0 { // MF or offset
			return s, false
		}
		proto = f[l3+9]
		s.l4, s.end = l3+20, l3+int(binary.BigEndian.Uint16(f[l3+2:]))
	case 0x86dd:
		if len(f) < l3+40 || f[l3]>>4 != 6 {
			return s, false
		}
		proto, s.v6 = f[l3+6], true
		s.l4, s.end = l3+40, l3+40+int(binary.BigEndian.Uint16(f[l3+4:]))
	default:
		return s, false
	}
	if s.end > len(f) || s.l4 > s.end {
		return s, false
	}
	switch proto {
	case unix.IPPROTO_TCP:
		if s.l4+20 > s.end {
			return s, false
		}
		s.t, s.hdr = &tcp, s.l4+int(f[s.l4+12]>>4)*4
		if s.hdr < s.l4+20 {
			return s, false
		}
		s.seq, s.flags = binary.BigEndian.Uint32(f[s.l4+4:]), f[s.l4+13]
	case unix.IPPROTO_UDP:
		s.t, s.hdr = &udp, s.l4+8
	default:
		return s, false
	}
	return s, s.hdr < s.end && s.hdr <= maxMergeHdr // no payload: nothing to gain
}

// mergeable reports whether the parsed frame f may join a super-frame: a
// valid IPv4 header checksum; TCP without SYN, FIN, RST, URG, ECE or CWR; UDP whose length agrees with
// IP's and which has a checksum (one sent without stays as it was). Its
// checksum is checked separately (csumOK), and only when it is merged.
func (s *seg) mergeable(f []byte) bool {
	if !s.v6 && fold(checksum(0, f[s.l3:s.l3+20])) != 0xffff {
		return false // a damaged IPv4 header would be made whole by the merge
	}
	if s.t.stream {
		return s.flags&(tcpSYN|tcpFIN|tcpRST|tcpURG|tcpECE|tcpCWR) == 0
	}
	l := s.l4 + s.t.length
	return int(binary.BigEndian.Uint16(f[l:])) == s.end-s.l4 && binary.BigEndian.Uint16(f[s.l4+s.t.csum:]) != 0
}

// fixHeaders makes the headers in frame (parsed as s; the payload need not
// follow) those of a packet ending at end, the k-th cut from a super-frame:
// IP length, IPv4 ID + k and header checksum, UDP length. The one place
// lengths are set, for segmenting and merging alike.
func fixHeaders(frame []byte, s *seg, end, k int) {
	l3 := s.l3
	if s.v6 {
		binary.BigEndian.PutUint16(frame[l3+4:], uint16(end-l3-40))
	} else {
		binary.BigEndian.PutUint16(frame[l3+2:], uint16(end-l3))
		binary.BigEndian.PutUint16(frame[l3+4:], binary.BigEndian.Uint16(frame[l3+4:])+uint16(k))
		frame[l3+10], frame[l3+11] = 0, 0
		binary.BigEndian.PutUint16(frame[l3+10:], ^fold(checksum(0, frame[l3:l3+20])))
	}
	if s.t.length != 0 {
		binary.BigEndian.PutUint16(frame[s.l4+s.t.length:], uint16(end-s.l4))
	}
}
