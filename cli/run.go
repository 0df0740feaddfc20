package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/internal/netns"
)

// Backend is where commands take effect: the namespace's daemon
// (daemon.Client). Errors should carry the kernel's errno.
type Backend interface {
	AddTunnel(dataplane.TunnelConfig) error
	AddSession(dataplane.SessionConfig) error
	DeleteTunnel(tunnelID uint32) error
	DeleteSession(tunnelID, sessionID uint32) error
	List() ([]dataplane.TunnelInfo, []dataplane.SessionInfo, error)
}

// Runner executes commands as ip l2tp does.
type Runner struct {
	Backend Backend
	Format  Format
	Out     io.Writer
	Err     io.Writer
	// Prog names the command in messages: Prog ("" means it) or IPProg.
	Prog string
	// Other, when set, runs a batch line that is not an l2tp command (the
	// ip shim hands them to ip) and returns its exit status; the lines
	// then need their object word, as ip's do.
	Other   func(args []string) int
	aborted bool // see Abort
}

// Strerror is glibc's strerror text for an errno ("File exists").
func Strerror(e syscall.Errno) string {
	s := e.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// abortError is an error that ends the run at once (a batch too) with its
// own message, not a kernel error's text.
type abortError struct{ err error }

func (a abortError) Error() string { return a.err.Error() }
func (a abortError) Unwrap() error { return a.err }

// Abort wraps err so that the Runner prints it as it is ("l2tpu: ..."),
// exits with ExitFailed and runs nothing more: for a backend that must not
// go on, such as one that finds its daemon impersonated.
func Abort(err error) error { return abortError{err} }

// hintError carries a line to print before ip's error text.
type hintError struct {
	err  error
	hint string
}

func (h hintError) Error() string { return h.err.Error() }
func (h hintError) Unwrap() error { return h.err }

// WithHint makes the Runner print "l2tpu: hint" before ip's text for err:
// for failures the kernel does not have, which its text cannot explain.
func WithHint(err error, hint string) error { return hintError{err, hint} }

// failed prints what rtnl_talk prints for a kernel error, and returns ip's
// exit status for it.
func (r *Runner) failed(err error) int {
	var a abortError
	if errors.As(err, &a) {
		fmt.Fprintf(r.Err, "l2tpu: %v\n", a.err)
		r.aborted = true
		return ExitFailed
	}
	var h hintError
	if errors.As(err, &h) {
		fmt.Fprintf(r.Err, "%s: %s\n", Prog, h.hint)
	}
	var e syscall.Errno
	if !errors.As(err, &e) {
		e = dataplane.Errno(err)
	}
	fmt.Fprintf(r.Err, "RTNETLINK answers: %s\n", Strerror(e))
	return ExitFailed
}

// dumpFailed is a failed show: ip opens the JSON array before the dump,
// rtnl_dump_filter prints the error, and ip says "Dump terminated" and
// exits 1 (as for `ip l2tp show` by a user without CAP_NET_ADMIN).
func (r *Runner) dumpFailed(err error) int {
	if errors.As(err, new(abortError)) {
		return r.failed(err)
	}
	if r.Format.JSON {
		io.WriteString(r.Out, "[")
	}
	r.failed(err)
	io.WriteString(r.Err, "Dump terminated\n")
	return 1
}

// Exec runs one parsed command and returns the exit status.
func (r *Runner) Exec(c *Command) int {
	for _, n := range c.Notices {
		io.WriteString(r.Err, n)
	}
	switch c.Verb {
	case Add:
		ret := ExitOK
		if c.Tunnel {
			if err := r.Backend.AddTunnel(c.T); err != nil {
				ret = r.failed(err)
			}
		}
		if c.Session {
			// Like ip: the session is attempted even if the tunnel
			// failed, and its result is the command's.
			ret = ExitOK
			if err := r.Backend.AddSession(c.S); err != nil {
				ret = r.failed(err)
			}
		}
		return ret
	case Del:
		var err error
		if c.DeletesSession() {
			err = r.Backend.DeleteSession(c.T.TunnelID, c.S.SessionID)
		} else {
			err = r.Backend.DeleteTunnel(c.T.TunnelID)
		}
		if err != nil {
			return r.failed(err)
		}
		return ExitOK
	case Show:
		ts, ss, err := r.Backend.List()
		if err != nil {
			return r.dumpFailed(err)
		}
		if c.Session {
			err = PrintSessions(r.Out, FilterSessions(ss, c), r.Format)
		} else {
			err = PrintTunnels(r.Out, FilterTunnels(ts, c), r.Format)
		}
		if err != nil {
			return ExitFailed
		}
	}
	return ExitOK
}

// ErrnoOf is the errno in err's chain, EIO if none.
func ErrnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// IsL2TPObject says whether ip takes word for its l2tp object: a prefix
// of "l2tp" that is not one of "link" ("l").
func IsL2TPObject(word string) bool { return len(word) >= 2 && Matches(word, "l2tp") }

// EnterNetns runs argv again inside the network namespace name, as ip -n
// does (see netns.Exec); it returns only on failure, with ip's message and
// status.
func EnterNetns(name string, argv []string, stderr io.Writer) int {
	err := netns.Exec(netns.PathOf(name), argv, os.Environ())
	e := ErrnoOf(err)
	var pe *os.PathError
	switch {
	case errors.As(err, new(*netns.SetnsError)):
		fmt.Fprintf(stderr, "setting the network namespace \"%s\" failed: %s\n", name, Strerror(e))
	case errors.As(err, &pe):
		fmt.Fprintf(stderr, "Cannot open network namespace \"%s\": %s\n", name, Strerror(e))
	default:
		fmt.Fprintf(stderr, "%s: cannot run again in network namespace \"%s\": %v\n", Prog, name, err)
	}
	return ExitUsage
}

func (r *Runner) prog() string {
	if r.Prog == "" {
		return Prog
	}
	return r.Prog
}

// Main runs the arguments after `ip l2tp` and returns the exit status,
// printing usage and parse errors as ip does.
func (r *Runner) Main(args []string) int {
	c, err := ParseAs(r.prog(), args)
	if err != nil {
		return r.parseError(err)
	}
	return r.Exec(c)
}

func (r *Runner) parseError(err error) int {
	var e *ExitError
	if !errors.As(err, &e) {
		fmt.Fprintln(r.Err, err)
		return ExitUsage
	}
	if e == ErrUsage {
		io.WriteString(r.Err, Usage(r.prog()))
	} else {
		io.WriteString(r.Err, e.Msg)
	}
	return e.Code
}

// BatchFile is Batch on the file name ("-": stdin), as ip -batch opens it.
func (r *Runner) BatchFile(stdin io.Reader, name string, force bool) int {
	in := stdin
	if name != "-" {
		fh, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(r.Err, "Cannot open file \"%s\" for reading: %s\n", name, Strerror(ErrnoOf(err)))
			return 1
		}
		defer fh.Close()
		in = fh
	}
	return r.Batch(in, name, force)
}

// Batch runs commands from in (ip -batch): one per line, '#' comments,
// a trailing '\' joins lines, words split as ip's makeargs does, an
// optional leading "l2tp" word. A parse error ends the run at once, as in
// ip; a failed operation prints "Command failed NAME:LINE" and stops the run
// unless force. The status is 1 if any command failed.
func (r *Runner) Batch(in io.Reader, name string, force bool) int {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxBatchLine)
	ret, lineNo := ExitOK, 0
	for {
		line, n, ok := readLogicalLine(sc)
		if !ok {
			break
		}
		lineNo += n
		args := SplitLine(line)
		if len(args) == 0 {
			continue
		}
		var code int
		switch {
		case r.Other != nil && !IsL2TPObject(args[0]):
			// ip exits at a parse error in any line.
			if code = r.Other(args); code == ExitUsage {
				return code
			}
		default:
			if args[0] == "l2tp" || r.Other != nil {
				args = args[1:]
			}
			c, err := ParseAs(r.prog(), args)
			if err != nil {
				return r.parseError(err)
			}
			code = r.Exec(c)
		}
		if code != ExitOK {
			if r.aborted {
				return ExitFailed
			}
			fmt.Fprintf(r.Err, "Command failed %s:%d\n", name, lineNo)
			ret = 1
			if !force {
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		// Never end a batch early with success: a read error or a line
		// over the limit fails the run.
		if errors.Is(err, bufio.ErrTooLong) {
			fmt.Fprintf(r.Err, "%s:%d: line longer than %d bytes\n", name, lineNo+1, maxBatchLine)
		} else {
			fmt.Fprintf(r.Err, "Cannot read %s: %v\n", name, err)
		}
		return 1
	}
	return ret
}

// maxBatchLine bounds one line of a batch file.
const maxBatchLine = 1 << 20

// readLogicalLine joins continuation lines and drops comments (ip's
// getcmdline); n is how many physical lines it took.
func readLogicalLine(sc *bufio.Scanner) (string, int, bool) {
	var b strings.Builder
	n := 0
	for sc.Scan() {
		n++
		l := sc.Text()
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		if strings.HasSuffix(l, "\\") {
			b.WriteString(strings.TrimSuffix(l, "\\"))
			continue
		}
		b.WriteString(l)
		return b.String(), n, true
	}
	return b.String(), n, n > 0
}

// SplitLine is ip's makeargs: words split on white space, honouring single
// and double quotes.
func SplitLine(line string) []string {
	var args []string
	var cur strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case quote != 0:
			if ch == quote {
				quote = 0
			} else {
				cur.WriteByte(ch)
			}
		case ch == '"' || ch == '\'':
			quote, in = ch, true
		case ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r':
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(ch)
			in = true
		}
	}
	if in {
		args = append(args, cur.String())
	}
	return args
}
