package host

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMemTotal(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"MemTotal:       16318592 kB\nMemFree:  1 kB\n", 16318592 << 10, false},
		{"MemFree: 1 kB\nMemTotal: 2048\n", 2048, false},
		{"MemFree: 1 kB\n", 0, true},
		{"MemTotal: lots kB\n", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseMemTotal([]byte(tt.in))
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseMemTotal(%q) = %d, %v, want %d (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestMemTotal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(path, []byte("MemTotal: 1024 kB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := MemTotal(path); got != 1<<20 || err != nil {
		t.Errorf("MemTotal(%s) = %d, %v, want %d", path, got, err, 1<<20)
	}
	if _, err := MemTotal(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Errorf("MemTotal(missing) = nil error, want an error")
	}
}

func TestReadCgroupLimits(t *testing.T) {
	tests := []struct {
		fixture string
		want    Limits
	}{
		{"v2-container", Limits{CPU: 0.5, Memory: 300 << 20}}, // docker run --cpus 0.5 --memory 300m
		{"v2-nested", Limits{CPU: 1.5, Memory: 1 << 30}},      // CPU limited on the parent slice, memory on the service
		{"v2-unlimited", Limits{}},                            // cpu.max "max", memory.max "max"
		{"v1-docker", Limits{CPU: 0.5, Memory: 300 << 20}},    // mounts rooted at the container's cgroup
		{"v1-nested", Limits{CPU: 2, Memory: 512 << 20}},      // memory limited below the hierarchy's root
		{"v1-unlimited", Limits{}},                            // quota -1, memory PAGE_COUNTER_MAX
		{"no-cgroup", Limits{}},                               // no /proc/self/cgroup: not on Linux
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			got, err := ReadCgroupLimits(filepath.Join("testdata", tt.fixture))
			if err != nil || got != tt.want {
				t.Errorf("ReadCgroupLimits(testdata/%s) = %+v, %v, want %+v", tt.fixture, got, err, tt.want)
			}
		})
	}
	_, err := ReadCgroupLimits(filepath.Join("testdata", "v2-malformed"))
	if err == nil || !strings.Contains(err.Error(), "cpu.max") || !strings.Contains(err.Error(), "half") {
		t.Errorf("ReadCgroupLimits(v2-malformed) = %v, want an error naming cpu.max and the bad quota", err)
	}
}

func TestAvailable(t *testing.T) {
	lim := Limits{CPU: 0.5, Memory: 300 << 20}
	if got := AvailableCPU(2, lim); got != 0.5 {
		t.Errorf("AvailableCPU(2, %+v) = %v, want 0.5", lim, got)
	}
	if got := AvailableCPU(2, Limits{CPU: 4}); got != 2 {
		t.Errorf("AvailableCPU(2, cpu 4) = %v, want the machine's 2", got)
	}
	if got := AvailableCPU(8, Limits{}); got != 8 {
		t.Errorf("AvailableCPU(8, none) = %v, want 8", got)
	}
	if got := AvailableMemory(24<<30, lim); got != 300<<20 {
		t.Errorf("AvailableMemory(24Gi, %+v) = %d, want 300Mi", lim, got)
	}
	if got := AvailableMemory(1<<30, Limits{Memory: 2 << 30}); got != 1<<30 {
		t.Errorf("AvailableMemory(1Gi, 2Gi limit) = %d, want 1Gi", got)
	}
	if got := AvailableMemory(0, lim); got != 300<<20 {
		t.Errorf("AvailableMemory(unknown, %+v) = %d, want the limit", lim, got)
	}
}
