package golden_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/jetserve/jetserve/pkg/golden"
)

// recorder is a testing.TB that keeps whether the check failed.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Errorf(string, ...any) { r.failed = true }

func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.txt")
	if got := golden.Check(t, path, []byte("one"), true, "-update"); string(got) != "one" {
		t.Fatalf("Check(update) returned %q, want the written %q", got, "one")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "one" {
		t.Fatalf("after Check(update) the file holds %q, %v; want %q", b, err, "one")
	}
	same := &recorder{TB: t}
	golden.Check(same, path, []byte("one"), false, "-update")
	if same.failed {
		t.Error("Check of equal content failed")
	}
	differs := &recorder{TB: t}
	if got := golden.Check(differs, path, []byte("two"), false, "-update"); string(got) != "one" {
		t.Errorf("Check returned %q, want the file's %q", got, "one")
	}
	if !differs.failed {
		t.Error("Check of different content did not fail")
	}
}
