// Package cli is l2tpu's command line: the grammar of iproute2's `ip l2tp`
// (ip/ipl2tp.c), with its messages and exit codes, and its printer. It does
// no I/O of its own beyond writing messages: Parse turns arguments into a
// Command, Print renders what the dataplane reports.
package cli

import (
	"encoding"
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

// Matches is iproute2's Matches(): arg is a non-empty prefix of word.
func Matches(arg, word string) bool {
	return arg != "" && strings.HasPrefix(word, arg)
}

// Parse parses the arguments after `l2tpu`.
func Parse(args []string) (*Command, error) { return ParseAs(Prog, args) }

// ParseAs parses the arguments after prog (Prog or IPProg), which the
// messages name.
func ParseAs(prog string, args []string) (*Command, error) {
	if len(args) == 0 || Matches(args[0], "help") {
		return nil, ErrUsage
	}
	c := &Command{}
	switch {
	case Matches(args[0], "add"):
		c.Verb = Add
	case Matches(args[0], "delete"):
		c.Verb = Del
	case Matches(args[0], "show"), Matches(args[0], "lst"), Matches(args[0], "list"):
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
// options overriding earlier ones, each word looked up in keywords.
func (c *Command) parseArgs(prog string, args []string) error {
	if len(args) == 0 {
		return ErrUsage
	}
	p := parser{c: c}
	c.S.L2Spec = encap.L2SpecDefault
	for i := 0; i < len(args); i++ {
		a := args[i]
		k := lookup(a)
		switch {
		case k == nil && Matches(a, "help"):
			return ErrUsage
		case k == nil:
			return &ExitError{ExitUsage, fmt.Sprintf("Unknown command: %s\n", a) + Usage(prog)}
		case k.flag != nil:
			k.flag(c)
			continue
		}
		if i++; i >= len(args) {
			return errIncomplete
		}
		p.word = a
		if err := k.value(&p, args[i]); err != nil {
			return err
		}
	}
	if !p.localSet {
		c.T.Local = netip.Addr{}
	}
	if !p.remoteSet {
		c.T.Remote = netip.Addr{}
	}
	return nil
}

// parser is parseArgs's state: the word whose value is being parsed, and
// whether the addresses were given (ip's "any" parses but counts as not).
type parser struct {
	c                   *Command
	word                string
	localSet, remoteSet bool
}

// keyword is one word of the grammar: its names (the first as ip's usage
// spells it, then its aliases), and either what the word alone does or
// what its value sets.
type keyword struct {
	names []string
	flag  func(c *Command)
	value func(p *parser, v string) error
}

func lookup(word string) *keyword {
	for i := range keywords {
		for _, n := range keywords[i].names {
			if n == word {
				return &keywords[i]
			}
		}
	}
	return nil
}

// keywords is the grammar of ipl2tp.c's parse_args, each word once, with
// l2tpu's reorder_timeout.
var keywords = []keyword{
	{names: []string{"tunnel"}, flag: func(c *Command) { c.Tunnel = true }},
	{names: []string{"session"}, flag: func(c *Command) { c.Session = true }},
	{names: []string{"encap"}, value: enum(false, "Unknown tunnel encapsulation \"%s\"\n",
		func(c *Command) encoding.TextUnmarshaler { return &c.T.Encap })},
	{names: []string{"name"}, value: func(p *parser, v string) error {
		if !validIfName(v) {
			return invarg("\"name\" not a valid ifname", v)
		}
		p.c.S.Name = v
		return nil
	}},
	{names: []string{"remote"}, value: func(p *parser, v string) (err error) {
		p.c.T.Remote, p.remoteSet, err = parseAddr(v)
		return err
	}},
	{names: []string{"local"}, value: func(p *parser, v string) (err error) {
		p.c.T.Local, p.localSet, err = parseAddr(v)
		return err
	}},
	{names: []string{"tunnel_id", "tid"}, value: id(func(c *Command, n uint32) { c.T.TunnelID, c.S.TunnelID = n, n })},
	{names: []string{"peer_tunnel_id", "ptid"}, value: id(func(c *Command, n uint32) { c.T.PeerTunnelID = n })},
	{names: []string{"session_id", "sid"}, value: id(func(c *Command, n uint32) { c.S.SessionID = n })},
	{names: []string{"peer_session_id", "psid"}, value: id(func(c *Command, n uint32) { c.S.PeerSessionID = n })},
	{names: []string{"udp_sport"}, value: port(func(c *Command, n uint16) { c.T.UDPSourcePort = n })},
	{names: []string{"udp_dport"}, value: port(func(c *Command, n uint16) { c.T.UDPDestPort = n })},
	{names: []string{"udp_csum"}, value: onOff(func(c *Command, on bool) { c.T.UDPCsum = on })},
	{names: []string{"udp6_csum_rx"}, value: onOff(func(c *Command, on bool) { c.T.UDP6ZeroCsumRx = !on })},
	{names: []string{"udp6_csum_tx"}, value: onOff(func(c *Command, on bool) { c.T.UDP6ZeroCsumTx = !on })},
	{names: []string{"offset"}, value: ignored},
	{names: []string{"peer_offset"}, value: ignored},
	{names: []string{"cookie"}, value: cookie(func(c *Command, k encap.Cookie) { c.S.Cookie = k })},
	{names: []string{"peer_cookie"}, value: cookie(func(c *Command, k encap.Cookie) { c.S.PeerCookie = k })},
	{names: []string{"l2spec_type"}, value: enum(true, "Unknown layer2specific header type \"%s\"\n",
		func(c *Command) encoding.TextUnmarshaler { return &c.S.L2Spec })},
	{names: []string{"seq"}, value: choice(true, "Unknown seq value \"%s\"\n", map[string]func(*Command){
		"both": func(c *Command) { c.S.SendSeq, c.S.RecvSeq = true, true },
		"recv": func(c *Command) { c.S.RecvSeq = true },
		"send": func(c *Command) { c.S.SendSeq = true },
		"none": func(c *Command) { c.S.SendSeq, c.S.RecvSeq = false, false },
	})},
	// l2tpu's extension, in milliseconds as netlink's L2TP_ATTR_RECV_TIMEOUT.
	{names: []string{"reorder_timeout"}, value: number(0xffffffff, "invalid reorder timeout (milliseconds)\n",
		func(c *Command, n uint64) { c.S.ReorderTimeout = time.Duration(n) * time.Millisecond })},
}

// The value parsers that several keywords share.

// choice takes one of the words in set (case-blind if fold, as ipl2tp.c's
// strcasecmp); unknown is the message, with the word, for any other.
func choice(fold bool, unknown string, set map[string]func(*Command)) func(*parser, string) error {
	return func(p *parser, v string) error {
		w := v
		if fold {
			w = strings.ToLower(v)
		}
		f, ok := set[w]
		if !ok {
			return &ExitError{ExitUsage, fmt.Sprintf(unknown, v)}
		}
		f(p.c)
		return nil
	}
}

// enum takes a word of the text form of the field's type (its
// UnmarshalText: encap.Encap's udp and ip, encap.L2Spec's none and
// default), case-blind if fold (lowered first, as ipl2tp.c's strcasecmp);
// ip takes these words whole, never a prefix. unknown is the message, with
// the word, for any other.
func enum(fold bool, unknown string, field func(*Command) encoding.TextUnmarshaler) func(*parser, string) error {
	return func(p *parser, v string) error {
		w := v
		if fold {
			w = strings.ToLower(v)
		}
		if field(p.c).UnmarshalText([]byte(w)) != nil {
			return &ExitError{ExitUsage, fmt.Sprintf(unknown, v)}
		}
		return nil
	}
}

// number parses a get_u32/get_u16 value of at most max; bad is the
// message for anything else.
func number(max uint64, bad string, set func(*Command, uint64)) func(*parser, string) error {
	return func(p *parser, v string) error {
		n, ok := strtoul(v, max)
		if !ok {
			return invarg(bad, v)
		}
		set(p.c, n)
		return nil
	}
}

func id(set func(*Command, uint32)) func(*parser, string) error {
	return number(0xffffffff, "invalid ID\n", func(c *Command, n uint64) { set(c, uint32(n)) })
}

func port(set func(*Command, uint16)) func(*parser, string) error {
	return number(0xffff, "invalid port\n", func(c *Command, n uint64) { set(c, uint16(n)) })
}

func onOff(set func(*Command, bool)) func(*parser, string) error {
	return func(p *parser, v string) error {
		switch v {
		case "on":
			set(p.c, true)
		case "off":
			set(p.c, false)
		default:
			return invarg("invalid option for "+p.word+"\n", v)
		}
		return nil
	}
}

func cookie(set func(*Command, encap.Cookie)) func(*parser, string) error {
	return func(p *parser, v string) error {
		if len(v) != 8 && len(v) != 16 {
			return invarg("cookie must be either 8 or 16 hex digits\n", v)
		}
		k, err := encap.ParseCookie(v)
		if err != nil {
			return invarg("cookie must be a hex string\n", v)
		}
		set(p.c, k)
		return nil
	}
}

// ignored is ip's handling of the offset options: a notice, the value
// skipped.
func ignored(p *parser, _ string) error {
	p.c.Notices = append(p.c.Notices, fmt.Sprintf("Ignoring option \"%s\"\n", p.word))
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
