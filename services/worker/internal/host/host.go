// Package host reads what a worker advertises about its machine: the memory
// size from /proc/meminfo and the CPU and memory limits of the cgroup it
// runs in (a container's --cpus and --memory). It holds no state and
// starts no goroutines.
package host

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MemInfoPath is where Linux reports memory.
const MemInfoPath = "/proc/meminfo"

// MemTotal reads the MemTotal line of the meminfo file at path, in bytes.
func MemTotal(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	n, err := ParseMemTotal(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// ParseMemTotal finds "MemTotal: <n> kB" in meminfo text and returns bytes.
func ParseMemTotal(meminfo []byte) (int64, error) {
	for _, line := range strings.Split(string(meminfo), "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad MemTotal %q", strings.TrimSpace(rest))
		}
		if len(f) > 1 && strings.EqualFold(f[1], "kB") {
			n <<= 10
		}
		return n, nil
	}
	return 0, fmt.Errorf("no MemTotal line")
}
