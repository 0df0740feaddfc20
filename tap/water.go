package tap

import (
	"fmt"
	"os"

	"github.com/songgao/water"
)

func openWater(c Config) (opened, error) {
	if c.Attach {
		if _, err := InterfaceIndex(c.Name); err != nil {
			return opened{}, fmt.Errorf("tap: attach %s: no such device", c.Name)
		}
	}
	mq := c.Queues > 1
	open := func() (*water.Interface, error) {
		return water.New(water.Config{DeviceType: water.TAP,
			PlatformSpecificParams: water.PlatformSpecificParams{Name: c.Name, Persist: c.Persist, MultiQueue: mq}})
	}
	ifce, err := open()
	if err != nil && c.Attach {
		mq = !mq // the device's multi-queue flag is the other one (openUnix)
		ifce, err = open()
	}
	if err != nil {
		return opened{}, fmt.Errorf("tap: create %q: %w", c.Name, err)
	}
	// water opens /dev/net/tun non-blocking and wraps it in an *os.File;
	// batch I/O needs that file's raw fd.
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return opened{}, fmt.Errorf("tap: water returned %T, not a file", ifce.ReadWriteCloser)
	}
	return opened{f: f, name: ifce.Name(), mq: mq}, nil
}
