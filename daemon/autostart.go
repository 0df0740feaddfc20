package daemon

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/l2tpu/l2tpu/cli"
	"github.com/l2tpu/l2tpu/dataplane"
)

// Client is the cli.Backend that talks to this network namespace's daemon,
// starting it on the first change (as root), as `ip l2tp` talks to the
// kernel.
type Client struct{}

// NewClient returns a Client for the calling thread's network namespace.
func NewClient() *Client { return &Client{} }

var _ cli.Backend = (*Client)(nil)

func (*Client) call(req Request, start bool) (Response, error) {
	resp, err := Call(req)
	if errors.Is(err, ErrNotRunning) && !start && os.Geteuid() == 0 {
		// A state file (or the options of a daemon that kept its state
		// elsewhere, -state) without a daemon: it died. Bring it back
		// (it restores the state) rather than answer as if nothing
		// existed.
		if p, perr := DefaultPaths(); perr == nil {
			cookie, _ := NamespaceCookie()
			if _, serr := os.Stat(p.State); serr == nil {
				start = true
			} else if _, aerr := recordedArgs(p.Options, cookie); aerr == nil {
				start = true
			}
		}
	}
	if errors.Is(err, ErrNotRunning) && start {
		if os.Geteuid() != 0 {
			return resp, fmt.Errorf("l2tpu: only root may start the daemon: %w", syscall.EPERM)
		}
		if err := startHere(); err != nil {
			if errors.Is(err, ErrImpostor) {
				return resp, cli.Abort(err)
			}
			fmt.Fprintf(os.Stderr, "l2tpu: cannot start the daemon: %v\n", err)
			return resp, syscall.EIO
		}
		resp, err = Call(req)
	}
	if errors.Is(err, ErrImpostor) {
		return resp, cli.Abort(err)
	}
	if err != nil {
		return resp, err
	}
	if resp.Errno != 0 {
		err := fmt.Errorf("%s: %w", resp.Error, syscall.Errno(resp.Errno))
		if resp.Hint != "" {
			err = cli.WithHint(err, resp.Hint)
		}
		return resp, err
	}
	return resp, nil
}

// startHere starts this namespace's daemon from this executable.
func startHere() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	p, err := DefaultPaths()
	if err != nil {
		return err
	}
	// -keep: a SIGTERM that reaches it with its caller's session or
	// service (it starts in the caller's cgroup) must not delete what it
	// holds; the next command restores it. l2tpu daemon stop deletes.
	// After a crash, the options of the daemon that died (a service's
	// -group, -metrics, tuning...), which it recorded.
	cookie, _ := NamespaceCookie()
	if args, err := recordedArgs(p.Options, cookie); err == nil {
		return start(exe, p.Log, []string{OptionsFromRecord + "=1"}, args)
	} else if !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "l2tpu: %v; the daemon starts with -keep only\n", err)
	}
	return Start(exe, p.Log, "-keep")
}

func (c *Client) AddTunnel(t dataplane.TunnelConfig) error {
	_, err := c.call(Request{Op: OpAddTunnel, Tunnel: &t}, true)
	return err
}

func (c *Client) AddSession(s dataplane.SessionConfig) error {
	_, err := c.call(Request{Op: OpAddSession, Session: &s}, true)
	return err
}

// Without a daemon there is nothing to delete: the kernel's answer is ENODEV.
func (c *Client) DeleteTunnel(id uint32) error {
	_, err := c.call(Request{Op: OpDelTunnel, TunnelID: id}, false)
	if errors.Is(err, ErrNotRunning) {
		return syscall.ENODEV
	}
	return err
}

func (c *Client) DeleteSession(tid, sid uint32) error {
	_, err := c.call(Request{Op: OpDelSession, TunnelID: tid, SessionID: sid}, false)
	if errors.Is(err, ErrNotRunning) {
		return syscall.ENODEV
	}
	return err
}

// Without a daemon there is nothing to show.
func (c *Client) List() ([]dataplane.TunnelInfo, []dataplane.SessionInfo, error) {
	resp, err := c.call(Request{Op: OpList}, false)
	if errors.Is(err, ErrNotRunning) {
		return nil, nil, nil
	}
	return resp.Tunnels, resp.Sessions, err
}
