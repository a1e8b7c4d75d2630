// Package golden compares what a test made with a file kept beside it (a
// golden file), and rewrites that file when the test is run with -update.
package golden

import (
	"bytes"
	"os"
	"testing"
)

// Check fails the test if the file at path differs from got, saying how
// to rewrite it (rewrite, e.g. "go test -run TestX -update"); with update
// it writes got there first. It returns the file's content.
func Check(tb testing.TB, path string, got []byte, update bool, rewrite string) []byte {
	tb.Helper()
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	file, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read %s: %v (%s writes it)", path, err, rewrite)
	}
	if !bytes.Equal(file, got) {
		tb.Errorf("%s is not what the test makes (%s rewrites it):\n--- made\n%s\n--- %s\n%s", path, rewrite, got, path, file)
	}
	return file
}
