//go:build !unix

package devfleet

import (
	"fmt"
	"os"
)

// lockDataDir only creates dir where flock(2) does not exist: two dev
// fleets on one data directory are not detected there.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	return func() {}, nil
}
