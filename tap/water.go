package tap

import (
	"fmt"
	"os"

	"github.com/songgao/water"
)

func openWater(c Config) (*os.File, string, error) {
	if c.Attach {
		if _, err := interfaceIndex(c.Name); err != nil {
			return nil, "", fmt.Errorf("tap: attach %s: no such device", c.Name)
		}
	}
	ifce, err := water.New(water.Config{DeviceType: water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: c.Name, Persist: c.Persist}})
	if err != nil {
		return nil, "", fmt.Errorf("tap: create %q: %w", c.Name, err)
	}
	// water opens /dev/net/tun non-blocking and wraps it in an *os.File;
	// batch I/O needs that file's raw fd.
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, "", fmt.Errorf("tap: water returned %T, not a file", ifce.ReadWriteCloser)
	}
	return f, ifce.Name(), nil
}
