package conn

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/encap"
)

// hdrTx is an IP tunnel's transmit socket that writes the IP header itself
// (IPPROTO_RAW, IP_HDRINCL): the kernel hands such a socket only packets
// of protocol 255 (its filter drops them), not the tunnel's protocol-115
// messages, so no tunnel costs their receive path anything. The
// header is the kernel's l2tp_ip's: no options, TOS 0, DF off, the
// namespace's TTL (hop limit), protocol 115; for IPv4 the kernel fills the
// length, the identification and the checksum. A message longer than the
// route allows (EMSGSIZE: the kernel does not fragment what it did not
// build) is fragmented here, as the kernel fragments its own.
type hdrTx struct {
	*sock
	v6     bool
	hlen   int
	remote netip.Addr
	tmpl   [ipv6.HeaderLen]byte
	fragID atomic.Uint32
}

func newHdrTx(s *sock, local, remote netip.Addr) (Conn, error) {
	t := &hdrTx{sock: s, v6: local.Is6(), remote: remote}
	s.bc.(*recvBatch).noICMP = true
	var b [4]byte
	rand.Read(b[:])
	t.fragID.Store(binary.BigEndian.Uint32(b[:]))
	var ttl int
	var err error
	s.rc.Control(func(fd uintptr) {
		if t.v6 {
			ttl, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS)
		} else {
			ttl, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL)
		}
	})
	if err != nil || ttl <= 0 || ttl > 255 {
		ttl = 64
	}
	h := t.tmpl[:]
	if t.v6 {
		t.hlen = ipv6.HeaderLen
		// A flow label of its own, as the kernel's automatic one is
		// constant for a socket.
		var fl [4]byte
		rand.Read(fl[:])
		binary.BigEndian.PutUint32(h, 6<<28|binary.BigEndian.Uint32(fl[:])&0xfffff)
		h[6], h[7] = encap.IPProto, byte(ttl)
		copy(h[8:24], local.AsSlice())
		copy(h[24:40], remote.AsSlice())
	} else {
		t.hlen = ipv4.HeaderLen
		h[0], h[8], h[9] = 0x45, byte(ttl), encap.IPProto
		copy(h[12:16], local.AsSlice())
		copy(h[16:20], remote.AsSlice())
	}
	return t, nil
}

// maxPayload is the longest message an IP datagram carries: the IPv4 total
// length and the IPv6 payload length are 16 bits.
func maxPayload(v6 bool) int {
	if v6 {
		return 0xffff
	}
	return 0xffff - ipv4.HeaderLen
}

// put writes the header for a message of n bytes into h (n at most
// maxPayload: longer fails to send, as the kernel's own would).
func (t *hdrTx) put(h []byte, n int) {
	copy(h, t.tmpl[:t.hlen])
	if n > maxPayload(t.v6) {
		n = 0 // a length the kernel refuses (EINVAL) rather than one cut short
	}
	if t.v6 {
		binary.BigEndian.PutUint16(h[4:], uint16(n))
	} else {
		binary.BigEndian.PutUint16(h[2:], uint16(ipv4.HeaderLen+n))
	}
}

func (t *hdrTx) WriteBatch(bufs [][]byte, offset int) (int, error) {
	if offset < t.hlen {
		return t.writeCopies(bufs, offset)
	}
	head := offset - t.hlen
	for _, b := range bufs {
		t.put(b[head:offset], len(b)-offset)
	}
	sent := 0
	var lastErr error
	for done := 0; done < len(bufs); {
		k, err := t.sock.writeUntil(bufs[done:], head)
		sent += k
		done += k
		if done == len(bufs) {
			break
		}
		// bufs[done] failed: longer than the route allows is ours to
		// fragment; anything else is lost, as one send would lose it.
		if errors.Is(err, unix.EMSGSIZE) {
			if ferr := t.writeFragments(bufs[done][head:]); ferr == nil {
				sent++
			} else {
				lastErr = ferr
			}
		} else {
			lastErr = err
		}
		done++
	}
	return sent, lastErr
}

// refreshRoute connects the socket again, so that its route, and the MTU
// IP_MTU reports, are the current ones: an IPPROTO_RAW send neither checks
// nor renews the route cached at connect, while the kernel's EMSGSIZE
// check reads the current route's device.
func (t *hdrTx) refreshRoute() { connectRaw(t.rc, t.remote) }

// writeCopies sends copies with room for the header (a caller without
// HeaderRoom: tests, not the data path).
func (t *hdrTx) writeCopies(bufs [][]byte, offset int) (int, error) {
	cp := make([][]byte, len(bufs))
	for i, b := range bufs {
		cp[i] = make([]byte, t.hlen+len(b)-offset)
		copy(cp[i][t.hlen:], b[offset:])
	}
	return t.WriteBatch(cp, t.hlen)
}

// writeFragments sends pkt (header and message) as fragments that fit the
// route's MTU, with the route renewed first (the MTU may have changed);
// if the route still refuses them, at the smallest MTU of the family.
func (t *hdrTx) writeFragments(pkt []byte) error {
	id := t.fragID.Add(1)
	if !t.v6 && id&0xffff == 0 {
		id = t.fragID.Add(1) // 0 would let the kernel choose one per fragment
	}
	t.refreshRoute()
	minMTU := 576
	if t.v6 {
		minMTU = 1280
	}
	var err error
	for _, mtu := range []int{t.PathMTU(), minMTU} {
		frags := fragment(pkt, t.v6, mtu, id)
		if frags == nil {
			return unix.EMSGSIZE
		}
		if _, err = t.sock.writeUntil(frags, 0); !errors.Is(err, unix.EMSGSIZE) {
			return err
		}
	}
	return err
}

// fragment cuts pkt (an IPv4 or IPv6 header without options, then the
// message) into fragments of at most mtu bytes with identification id, as
// ip_fragment and ip6_fragment cut the kernel's own: every fragment but the
// last carries a multiple of 8 bytes. nil if mtu leaves no room.
func fragment(pkt []byte, v6 bool, mtu int, id uint32) [][]byte {
	hlen, extra := ipv4.HeaderLen, 0
	if v6 {
		hlen, extra = ipv6.HeaderLen, 8 // the fragment header
	}
	step := (mtu - hlen - extra) &^ 7
	msg := pkt[hlen:]
	if step <= 0 || len(msg) > maxPayload(v6) {
		return nil // no room, or longer than any IP datagram (as ip_append_data refuses)
	}
	var frags [][]byte
	for off := 0; off < len(msg); off += step {
		end := min(off+step, len(msg))
		more := end < len(msg)
		f := make([]byte, hlen+extra+end-off)
		copy(f, pkt[:hlen])
		if v6 {
			binary.BigEndian.PutUint16(f[4:], uint16(extra+end-off))
			f[6] = unix.IPPROTO_FRAGMENT
			fh := f[hlen:]
			fh[0] = encap.IPProto
			w := uint16(off)
			if more {
				w |= 1
			}
			binary.BigEndian.PutUint16(fh[2:], w)
			binary.BigEndian.PutUint32(fh[4:], id)
		} else {
			binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
			binary.BigEndian.PutUint16(f[4:], uint16(id))
			w := uint16(off / 8)
			if more {
				w |= 0x2000 // more fragments
			}
			binary.BigEndian.PutUint16(f[6:], w)
		}
		copy(f[hlen+extra:], msg[off:end])
		frags = append(frags, f)
	}
	return frags
}
