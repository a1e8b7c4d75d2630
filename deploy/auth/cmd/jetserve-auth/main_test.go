package main

import (
	"bytes"
	"strings"
	"testing"
)

// -h prints the flags and succeeds; --version prints the version; a
// missing --out is an error naming it.
func TestRunHelpAndVersion(t *testing.T) {
	tests := []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{[]string{"-h"}, "-out", ""},
		{[]string{"--version"}, "jetserve-auth ", ""},
		{nil, "", "--out is required"},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		err := run(tc.args, &out)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !strings.Contains(out.String(), tc.wantOut) {
			t.Errorf("run(%q) = %v, output %q; want nil and output containing %q", tc.args, err, out.String(), tc.wantOut)
		}
	}
}
