// Package cli is l2tpu's command line: the grammar of iproute2's `ip l2tp`
// (ip/ipl2tp.c), with its messages and exit codes, and its printer. It does
// no I/O of its own beyond writing messages: Parse turns arguments into a
// Command, Print renders what the dataplane reports.
package cli

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

// Exit codes, as ip's.
const (
	ExitOK      = 0
	ExitAddress = 1   // bad address (get_addr exits 1)
	ExitFailed  = 2   // the operation failed ("RTNETLINK answers: ...")
	ExitUsage   = 255 // parse errors and usage (exit(-1))
)

// Verb is what a command does.
type Verb int

const (
	Add Verb = iota + 1
	Del
	Show
)

// Command is one parsed `ip l2tp` command.
type Command struct {
	Verb    Verb
	Tunnel  bool // the word "tunnel" was given
	Session bool // the word "session" was given
	T       dataplane.TunnelConfig
	S       dataplane.SessionConfig
	// Notices are messages ip prints to stderr while parsing (the ignored
	// offset options) and goes on.
	Notices []string
}

// ExitError ends the program with Code after printing Msg to stderr.
type ExitError struct {
	Code int
	Msg  string // printed as is; may end in one or two newlines
}

func (e *ExitError) Error() string { return strings.TrimRight(e.Msg, "\n") }

func invarg(msg, arg string) error {
	return &ExitError{ExitUsage, fmt.Sprintf("Error: argument \"%s\" is wrong: %s\n", arg, msg)}
}

func missarg(key string) error {
	return &ExitError{ExitUsage, fmt.Sprintf("Error: argument \"%s\" is required\n", key)}
}

var errIncomplete = &ExitError{ExitUsage, "Command line is not complete. Try option \"help\"\n"}

// ErrUsage asks for the usage text and exit status 255.
var ErrUsage = &ExitError{ExitUsage, ""}

// matches is iproute2's matches(): arg is a non-empty prefix of word.
func matches(arg, word string) bool {
	return arg != "" && strings.HasPrefix(word, arg)
}

// Parse parses the arguments after `l2tpu`.
func Parse(args []string) (*Command, error) { return ParseAs(Prog, args) }

// ParseAs parses the arguments after prog (Prog or IPProg), which the
// messages name.
func ParseAs(prog string, args []string) (*Command, error) {
	if len(args) == 0 || matches(args[0], "help") {
		return nil, ErrUsage
	}
	c := &Command{}
	switch {
	case matches(args[0], "add"):
		c.Verb = Add
	case matches(args[0], "delete"):
		c.Verb = Del
	case matches(args[0], "show"), matches(args[0], "lst"), matches(args[0], "list"):
		c.Verb = Show
	default:
		return nil, &ExitError{ExitUsage, fmt.Sprintf("Command \"%s\" is unknown, try \"%s help\".\n", args[0], prog)}
	}
	if err := c.parseArgs(prog, args[1:]); err != nil {
		return nil, err
	}
	return c, c.check()
}

// parseArgs is ipl2tp.c's parse_args: one loop for every verb, later
// options overriding earlier ones.
func (c *Command) parseArgs(prog string, args []string) error {
	if len(args) == 0 {
		return ErrUsage
	}
	t, s := &c.T, &c.S
	s.L2Spec = encap.L2SpecDefault
	var localSet, remoteSet bool
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() (string, error) {
			i++
			if i >= len(args) {
				return "", errIncomplete
			}
			return args[i], nil
		}
		var v string
		var err error
		switch a {
		case "tunnel":
			c.Tunnel = true
			continue
		case "session":
			c.Session = true
			continue
		}
		known := true
		switch a {
		case "encap", "name", "remote", "local", "tunnel_id", "tid", "peer_tunnel_id", "ptid",
			"session_id", "sid", "peer_session_id", "psid", "udp_sport", "udp_dport", "udp_csum",
			"udp6_csum_rx", "udp6_csum_tx", "offset", "peer_offset", "cookie", "peer_cookie",
			"l2spec_type", "seq", "reorder_timeout":
			if a == "offset" || a == "peer_offset" {
				c.Notices = append(c.Notices, fmt.Sprintf("Ignoring option \"%s\"\n", a))
			}
			if v, err = next(); err != nil {
				return err
			}
		default:
			known = false
		}
		if !known {
			if matches(a, "help") {
				return ErrUsage
			}
			return &ExitError{ExitUsage, fmt.Sprintf("Unknown command: %s\n", a) + Usage(prog)}
		}
		switch a {
		case "encap":
			switch v {
			case "ip":
				t.Encap = encap.EncapIP
			case "udp":
				t.Encap = encap.EncapUDP
			default:
				return &ExitError{ExitUsage, fmt.Sprintf("Unknown tunnel encapsulation \"%s\"\n", v)}
			}
		case "name":
			if !validIfName(v) {
				return invarg("\"name\" not a valid ifname", v)
			}
			s.Name = v
		case "remote", "local":
			addr, ok, err := parseAddr(v)
			if err != nil {
				return err
			}
			if a == "remote" {
				t.Remote, remoteSet = addr, ok
			} else {
				t.Local, localSet = addr, ok
			}
		case "tunnel_id", "tid", "peer_tunnel_id", "ptid", "session_id", "sid", "peer_session_id", "psid":
			n, ok := strtoul(v, 0xffffffff)
			if !ok {
				return invarg("invalid ID\n", v)
			}
			switch a {
			case "tunnel_id", "tid":
				t.TunnelID, s.TunnelID = uint32(n), uint32(n)
			case "peer_tunnel_id", "ptid":
				t.PeerTunnelID = uint32(n)
			case "session_id", "sid":
				s.SessionID = uint32(n)
			default:
				s.PeerSessionID = uint32(n)
			}
		case "udp_sport", "udp_dport":
			n, ok := strtoul(v, 0xffff)
			if !ok {
				return invarg("invalid port\n", v)
			}
			if a == "udp_sport" {
				t.UDPSourcePort = uint16(n)
			} else {
				t.UDPDestPort = uint16(n)
			}
		case "udp_csum", "udp6_csum_rx", "udp6_csum_tx":
			var on bool
			switch v {
			case "on":
				on = true
			case "off":
			default:
				return invarg("invalid option for "+a+"\n", v)
			}
			switch a {
			case "udp_csum":
				t.UDPCsum = on
			case "udp6_csum_rx":
				t.UDP6ZeroCsumRx = !on
			default:
				t.UDP6ZeroCsumTx = !on
			}
		case "cookie", "peer_cookie":
			if len(v) != 8 && len(v) != 16 {
				return invarg("cookie must be either 8 or 16 hex digits\n", v)
			}
			ck, err := encap.ParseCookie(v)
			if err != nil {
				return invarg("cookie must be a hex string\n", v)
			}
			if a == "cookie" {
				s.Cookie = ck
			} else {
				s.PeerCookie = ck
			}
		case "l2spec_type":
			switch strings.ToLower(v) {
			case "default":
				s.L2Spec = encap.L2SpecDefault
			case "none":
				s.L2Spec = encap.L2SpecNone
			default:
				return &ExitError{ExitUsage, fmt.Sprintf("Unknown layer2specific header type \"%s\"\n", v)}
			}
		case "seq":
			switch strings.ToLower(v) {
			case "both":
				s.SendSeq, s.RecvSeq = true, true
			case "recv":
				s.RecvSeq = true
			case "send":
				s.SendSeq = true
			case "none":
				s.SendSeq, s.RecvSeq = false, false
			default:
				return &ExitError{ExitUsage, fmt.Sprintf("Unknown seq value \"%s\"\n", v)}
			}
		case "reorder_timeout": // l2tpu extension, milliseconds as netlink's
			n, ok := strtoul(v, 0xffffffff)
			if !ok {
				return invarg("invalid reorder timeout (milliseconds)\n", v)
			}
			s.ReorderTimeout = time.Duration(n) * time.Millisecond
		}
	}
	if !localSet {
		t.Local = netip.Addr{}
	}
	if !remoteSet {
		t.Remote = netip.Addr{}
	}
	return nil
}

// check is do_add / do_del / do_show's validation, in their order.
func (c *Command) check() error {
	if !c.Tunnel && !c.Session {
		return missarg("tunnel or session")
	}
	switch c.Verb {
	case Add:
		if c.T.TunnelID == 0 {
			return missarg("tunnel_id")
		}
		if c.Session && c.S.PeerSessionID == 0 {
			return missarg("peer_session_id")
		}
		if c.Session && c.S.SessionID == 0 {
			return missarg("session_id")
		}
		if c.Tunnel && c.T.PeerTunnelID == 0 {
			return missarg("peer_tunnel_id")
		}
		if c.Tunnel {
			if !c.T.Local.IsValid() {
				return missarg("local")
			}
			if !c.T.Remote.IsValid() {
				return missarg("remote")
			}
			if c.T.Encap == encap.EncapUDP {
				if c.T.UDPSourcePort == 0 {
					return missarg("udp_sport")
				}
				if c.T.UDPDestPort == 0 {
					return missarg("udp_dport")
				}
			}
		}
	case Del:
		if c.Tunnel && c.T.TunnelID == 0 {
			return missarg("tunnel_id")
		}
		if c.Session && c.S.SessionID == 0 {
			return missarg("session_id")
		}
	}
	return nil
}

// DeletesSession is do_del's rule: a non-zero session_id deletes a session,
// whatever word was used.
func (c *Command) DeletesSession() bool { return c.S.SessionID != 0 }

// validIfName is iproute2's check_ifname (the kernel's dev_valid_name).
func validIfName(s string) bool {
	if s == "" || len(s) >= 16 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '/', ' ', '\t', '\n', '\v', '\f', '\r':
			return false
		}
	}
	return true
}

// strtoul is get_u32/get_u16: C strtoul with base 0 (leading white space,
// a sign, 0x hex, leading-0 octal), the whole string, at most max.
func strtoul(s string, max uint64) (uint64, bool) {
	n, rest, ok := cStrtoul(s)
	if !ok || rest != "" || n > max {
		return 0, false
	}
	return n, true
}

// cStrtoul parses a prefix of s as C's strtoul(s, &end, 0) does and returns
// the value and the unparsed rest; ok is false when no digits were read
// (end == s) or on overflow.
func cStrtoul(s string) (uint64, string, bool) {
	i := 0
	for i < len(s) && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r')) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	base := uint64(10)
	if i < len(s) && s[i] == '0' {
		if i+2 < len(s)+1 && i+1 < len(s) && (s[i+1] == 'x' || s[i+1] == 'X') && i+2 < len(s) && hexDigit(s[i+2]) >= 0 {
			base, i = 16, i+2
		} else {
			base = 8
		}
	}
	start := i
	var n uint64
	overflow := false
	for i < len(s) {
		d := hexDigit(s[i])
		if d < 0 || uint64(d) >= base {
			break
		}
		if n > (^uint64(0)-uint64(d))/base {
			overflow = true
		}
		n = n*base + uint64(d)
		i++
	}
	if i == start {
		return 0, s, false
	}
	if overflow {
		return 0, s[i:], false
	}
	if neg {
		n = -n
	}
	return n, s[i:], true
}

func hexDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// parseAddr is get_addr(..., AF_UNSPEC): "default" is 0.0.0.0, "any"/"all"
// parse but leave the family unset (so the address counts as missing), a
// string with ':' is IPv6 (inet_pton), anything else IPv4 in iproute2's
// dotted form (1 to 4 base-0 parts, missing trailing parts 0).
func parseAddr(v string) (netip.Addr, bool, error) {
	switch v {
	case "default":
		return netip.IPv4Unspecified(), true, nil
	case "any", "all":
		return netip.Addr{}, false, nil
	}
	bad := &ExitError{ExitAddress, fmt.Sprintf("Error: any valid address is expected rather than \"%s\".\n", v)}
	if strings.Contains(v, ":") {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" || !a.Is6() {
			return netip.Addr{}, false, bad
		}
		return a, true, nil
	}
	var b [4]byte
	rest := v
	for i := 0; i < 4; i++ {
		n, r, ok := cStrtoul(rest)
		if !ok || n > 255 {
			return netip.Addr{}, false, bad
		}
		b[i] = byte(n)
		if r == "" {
			break
		}
		if i == 3 || r[0] != '.' {
			return netip.Addr{}, false, bad
		}
		rest = r[1:]
	}
	return netip.AddrFrom4(b), true, nil
}
