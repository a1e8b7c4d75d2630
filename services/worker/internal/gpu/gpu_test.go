package gpu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
)

func TestNormalizeType(t *testing.T) {
	tests := []struct{ in, want string }{
		{"NVIDIA H100 80GB HBM3", "h100"},
		{"NVIDIA A100-SXM4-80GB", "a100"},
		{"NVIDIA A10G", "a10g"},
		{"Tesla T4", "t4"},
		{"NVIDIA L4", "l4"},
		{"NVIDIA GeForce RTX 4090", "rtx4090"},
		{"NVIDIA RTX A6000", "a6000"},
		{"NVIDIA GH200 480GB", "gh200"},
		{" NVIDIA H100 NVL ", "h100"},
		{"Mystery Accelerator", "mystery-accelerator"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := NormalizeType(tt.in); got != tt.want {
				t.Errorf("NormalizeType(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join("testdata", "nvidia-smi.csv"))
	if err != nil {
		t.Fatal(err)
	}
	want := []protocol.GPU{
		{Index: 0, Type: "h100", MemoryBytes: 81559 << 20},
		{Index: 1, Type: "h100", MemoryBytes: 81559 << 20},
		{Index: 2, Type: "a10g", MemoryBytes: 23028 << 20},
		{Index: 3, Type: "t4"},
	}
	got, err := Parse(fixture)
	if err != nil {
		t.Fatalf("Parse(fixture): %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(fixture) = %+v, want %+v", got, want)
	}

	for _, bad := range []string{"0, NVIDIA H100\n", "x, NVIDIA H100, 10\n", "0, NVIDIA H100, lots\n"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) = nil error, want an error", bad)
		}
	}
	if got, err := Parse(nil); err != nil || len(got) != 0 {
		t.Errorf("Parse(nil) = %v, %v, want no GPUs", got, err)
	}
}

// writeFake puts a shell script named nvidia-smi in a temp dir that prints
// the fixture (and fails unless called with the expected arguments).
func writeFake(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	fixture, err := filepath.Abs(filepath.Join("testdata", "nvidia-smi.csv"))
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\n" +
		"[ \"$1\" = \"--query-gpu=index,name,memory.total\" ] || { echo \"bad args: $*\" >&2; exit 2; }\n" +
		"[ \"$2\" = \"--format=csv,noheader,nounits\" ] || { echo \"bad args: $*\" >&2; exit 2; }\n" +
		"cat '" + fixture + "'\n"
	path := filepath.Join(dir, "nvidia-smi")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDetectFakeCommand(t *testing.T) {
	path := writeFake(t)
	got, err := Detect(context.Background(), path)
	if err != nil {
		t.Fatalf("Detect(%s): %v", path, err)
	}
	if len(got) != 4 || got[0].Type != "h100" || got[2].Type != "a10g" {
		t.Errorf("Detect(%s) = %+v, want the 4 fixture GPUs", path, got)
	}
}

func TestDetectOnPATH(t *testing.T) {
	path := writeFake(t)
	t.Setenv("PATH", filepath.Dir(path)+string(os.PathListSeparator)+os.Getenv("PATH"))
	got, err := Detect(context.Background(), "")
	if err != nil {
		t.Fatalf("Detect(\"\") with fake on PATH: %v", err)
	}
	if len(got) != 4 {
		t.Errorf("Detect(\"\") = %+v, want 4 GPUs", got)
	}
}

func TestDetectMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Detect(context.Background(), "")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Detect(\"\") with empty PATH = %v, want ErrNotFound", err)
	}
}

func TestDetectFailingCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvidia-smi")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Detect(context.Background(), path); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Detect(failing) = %v, want a run error", err)
	}
}
