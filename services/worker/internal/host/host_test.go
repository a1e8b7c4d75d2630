package host

import (
	"os"
	"path/filepath"
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
