package daemon

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RunDir holds runtime state: cleared at boot (tmpfs), like the kernel's.
const RunDir = "/run/l2tpu"

// StopInNamespace ends the daemon serving the network namespace mounted at
// nsPath (as /run/netns/NAME), by the PID it recorded, waits for it, and
// removes its runtime files (journal, log, PID file). For tools and tests
// that start daemons in namespaces they made.
func StopInNamespace(nsPath string) error {
	p, err := PathsAt(nsPath)
	if err != nil {
		return err
	}
	defer p.removeRuntime()
	b, err := os.ReadFile(p.PID)
	if err != nil {
		return nil // none runs
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return nil
	}
	for i := 0; i < 3000 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
