package host

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Limits are the CPU and memory limits of the cgroup a process runs in
// (a container's --cpus and --memory); zero means no limit.
type Limits struct {
	// CPU is the CPU bandwidth limit in CPUs (quota / period).
	CPU float64
	// Memory is the memory limit in bytes.
	Memory int64
}

// unlimited is where cgroup v1 memory limits mean "none" (the kernel
// writes PAGE_COUNTER_MAX pages, about 2^63 bytes).
const unlimited = int64(1) << 60

// ReadCgroupLimits reads the limits that apply to this process from the
// cgroup hierarchies it belongs to: cgroup v2 (cpu.max, memory.max) and v1
// (cpu.cfs_quota_us / cpu.cfs_period_us, memory.limit_in_bytes), in its
// own cgroup and every ancestor up to the hierarchy's mount, the lowest
// winning. root is the file system root: "/" on a machine, a fixture tree
// in tests. A process outside any cgroup (no /proc/self/cgroup) has no
// limits; a limit file that does not parse is an error naming it.
func ReadCgroupLimits(root string) (Limits, error) {
	groups, err := readProcCgroup(filepath.Join(root, "proc/self/cgroup"))
	if errors.Is(err, fs.ErrNotExist) {
		return Limits{}, nil
	}
	if err != nil {
		return Limits{}, err
	}
	mounts, err := readMountInfo(filepath.Join(root, "proc/self/mountinfo"))
	if errors.Is(err, fs.ErrNotExist) {
		return Limits{}, nil
	}
	if err != nil {
		return Limits{}, err
	}
	var lim Limits
	lower := func(cpu float64, mem int64) {
		if cpu > 0 && (lim.CPU == 0 || cpu < lim.CPU) {
			lim.CPU = cpu
		}
		if mem > 0 && mem < unlimited && (lim.Memory == 0 || mem < lim.Memory) {
			lim.Memory = mem
		}
	}
	for _, m := range mounts {
		switch {
		case m.fsType == "cgroup2":
			p, ok := groups[""]
			if !ok {
				continue
			}
			err = walk(root, m, p, func(dir string) error {
				cpu, err := readCPUMax(filepath.Join(dir, "cpu.max"))
				if err != nil {
					return err
				}
				mem, err := readLimit(filepath.Join(dir, "memory.max"))
				lower(cpu, mem)
				return err
			})
		case m.fsType == "cgroup" && slices.Contains(m.superOpts, "cpu"):
			p, ok := groups["cpu"]
			if !ok {
				continue
			}
			err = walk(root, m, p, func(dir string) error {
				quota, err := readLimit(filepath.Join(dir, "cpu.cfs_quota_us"))
				if err != nil || quota <= 0 {
					return err
				}
				period, err := readLimit(filepath.Join(dir, "cpu.cfs_period_us"))
				if err == nil && period > 0 {
					lower(float64(quota)/float64(period), 0)
				}
				return err
			})
		case m.fsType == "cgroup" && slices.Contains(m.superOpts, "memory"):
			p, ok := groups["memory"]
			if !ok {
				continue
			}
			err = walk(root, m, p, func(dir string) error {
				mem, err := readLimit(filepath.Join(dir, "memory.limit_in_bytes"))
				lower(0, mem)
				return err
			})
		}
		if err != nil {
			return Limits{}, err
		}
	}
	return lim, nil
}

// mount is one line of /proc/self/mountinfo.
type mount struct {
	root, point, fsType string
	superOpts           []string
}

// readProcCgroup maps each v1 controller to the process's cgroup path in
// its hierarchy, and "" to its cgroup v2 path.
func readProcCgroup(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return out, nil
}

// readMountInfo returns the cgroup and cgroup2 mounts.
func readMountInfo(file string) ([]mount, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mount-point options [optional...] - fstype source super-options
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || len(fields) < sep+4 {
			continue
		}
		fsType := fields[sep+1]
		if fsType != "cgroup" && fsType != "cgroup2" {
			continue
		}
		out = append(out, mount{root: unescape(fields[3]), point: unescape(fields[4]), fsType: fsType,
			superOpts: strings.Split(fields[sep+3], ",")})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return out, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// walk calls visit with the directory of cgroup path p in mount m and of
// each ancestor up to the mount point. A cgroup path outside the mount's
// root (another cgroup namespace) starts at the mount point.
func walk(root string, m mount, p string, visit func(dir string) error) error {
	rel := "/"
	if r, ok := strings.CutPrefix(path.Clean(p), m.root); ok && (m.root == "/" || r == "" || r[0] == '/') {
		rel = path.Clean("/" + r)
	}
	for {
		if err := visit(filepath.Join(root, m.point, rel)); err != nil {
			return err
		}
		if rel == "/" {
			return nil
		}
		rel = path.Dir(rel)
	}
}

// readCPUMax reads a cgroup v2 cpu.max ("max 100000" or "50000 100000")
// as CPUs; 0 when unlimited or absent.
func readCPUMax(file string) (float64, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", file, err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || len(f) > 2 {
		return 0, fmt.Errorf("%s: want \"<quota|max> <period>\", got %q", file, strings.TrimSpace(string(b)))
	}
	if f[0] == "max" {
		return 0, nil
	}
	quota, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || quota <= 0 {
		return 0, fmt.Errorf("%s: bad quota %q", file, f[0])
	}
	period := int64(100000) // the kernel's default
	if len(f) == 2 {
		if period, err = strconv.ParseInt(f[1], 10, 64); err != nil || period <= 0 {
			return 0, fmt.Errorf("%s: bad period %q", file, f[1])
		}
	}
	return float64(quota) / float64(period), nil
}

// readLimit reads a file holding one integer or "max"; "max", -1 and an
// absent file are 0 (no limit).
func readLimit(file string) (int64, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", file, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if u, uerr := strconv.ParseUint(s, 10, 64); uerr == nil && u > math.MaxInt64 {
			return 0, nil // beyond int64: no limit
		}
		return 0, fmt.Errorf("%s: not a number: %q", file, s)
	}
	if n < 0 {
		return 0, nil
	}
	return n, nil
}

// AvailableCPU is what a worker offers when resources.cpu is not set: the
// machine's CPUs, or the cgroup's limit when lower.
func AvailableCPU(numCPU int, lim Limits) float64 {
	if lim.CPU > 0 && lim.CPU < float64(numCPU) {
		return lim.CPU
	}
	return float64(numCPU)
}

// AvailableMemory is what a worker offers when resources.memory is not
// set: the machine's memory, or the cgroup's limit when lower (or when the
// machine's is unknown).
func AvailableMemory(memTotal int64, lim Limits) int64 {
	if lim.Memory > 0 && (memTotal <= 0 || lim.Memory < memTotal) {
		return lim.Memory
	}
	return memTotal
}
