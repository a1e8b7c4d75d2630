//go:build unix

package devfleet

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes dir for this process until unlock (or its exit): two
// embedded servers writing one JetStream store corrupt it, and a second dev
// fleet started from the same directory on other ports would share it.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "jetserve-dev.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another dev fleet (give this one its own --data-dir): %w", dir, err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}
