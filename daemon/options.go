package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
)

// The options a daemon was started with are recorded beside its journal,
// so that whichever way the next daemon of the namespace starts after a
// crash (the next command, or the service manager), it runs with what the
// administrator configured: -group, -metrics, -state and the tuning flags.

// optionsVersion is the recorded options' format.
const optionsVersion = 2

type recordedOptions struct {
	Version int      `json:"version"`
	Args    []string `json:"args"` // the daemon's flags, as given to l2tpu daemon
	// Whose they are: the network namespace's cookie and the boot's ID. A
	// namespace cookie is unique within one boot only, and a file name
	// outlives both (a /run that is not a tmpfs, an inode number reused):
	// options of another namespace, -state and -group among them, must
	// never start this one's daemon.
	Cookie uint64 `json:"netns_cookie"`
	BootID string `json:"boot_id"`
}

// OptionsFromRecord is the environment variable (set to "1") with which
// the client starts a daemon with recorded options, so that it says so.
const OptionsFromRecord = "L2TPU_RECORDED_OPTIONS"

// recordOptions writes args to path (atomically), as the options of the
// namespace with cookie (which must be known) in this boot; a failure is
// the caller's to log: the daemon runs on.
func recordOptions(path string, args []string, cookie uint64) error {
	boot := bootID()
	if cookie == 0 || boot == "" {
		return errors.New("options are recorded only where the namespace and the boot can be told apart (Linux 5.14 on)")
	}
	b, err := json.Marshal(recordedOptions{Version: optionsVersion, Args: args, Cookie: cookie, BootID: boot})
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_SYNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// recordedArgs are the flags recorded at path for the namespace with
// cookie in this boot, for a daemon started on demand: with -keep, as every
// daemon started on demand runs.
func recordedArgs(path string, cookie uint64) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r recordedOptions
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Version != optionsVersion {
		return nil, fmt.Errorf("%s: version %d, not %d", path, r.Version, optionsVersion)
	}
	if boot := bootID(); cookie == 0 || r.Cookie != cookie || boot == "" || r.BootID != boot {
		return nil, fmt.Errorf("%s: recorded for another network namespace or boot (cookie %d, boot %s), not used", path, r.Cookie, r.BootID)
	}
	if !slices.Contains(r.Args, "-keep") && !slices.Contains(r.Args, "--keep") {
		r.Args = append(r.Args, "-keep")
	}
	return r.Args, nil
}

// optionsSource says where the daemon's options came from: the command
// line, or the record of the daemon before (OptionsFromRecord is fromRecord).
func optionsSource(fromRecord string) string {
	if fromRecord == "1" {
		return "the record of the daemon before (started on demand after it died)"
	}
	return "the command line"
}

// logOptions logs the daemon's options and, where state is kept, records
// them (recordOptions) for a daemon started on demand after a crash.
func (s *Server) logOptions() {
	s.log.Info("options", "args", s.opt.Args, "from", optionsSource(os.Getenv(OptionsFromRecord)))
	if s.j != nil && s.opt.Args != nil {
		if err := recordOptions(s.paths.Options, s.opt.Args, s.cookie); err != nil {
			s.log.Warn("options not recorded: a daemon started on demand after a crash would run without them", "err", err)
		}
	}
}
