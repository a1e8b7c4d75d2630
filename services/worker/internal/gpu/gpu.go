// Package gpu finds a machine's NVIDIA GPUs by running nvidia-smi (NVML has
// no pure-Go binding) and parses what it prints into protocol.GPU values.
// It holds no state and starts no goroutines.
package gpu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"unicode"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// DefaultCommand is the program Detect runs when none is given; it is
// looked up on PATH.
const DefaultCommand = "nvidia-smi"

// queryArgs make nvidia-smi print one "index, name, memory MiB" line per GPU.
var queryArgs = []string{"--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"}

// ErrNotFound is returned by Detect when the command is not installed.
var ErrNotFound = errors.New("nvidia-smi not found")

// Detect runs command (DefaultCommand when "") and returns the GPUs it
// lists. A command that is not on PATH yields ErrNotFound.
func Detect(ctx context.Context, command string) ([]protocol.GPU, error) {
	if command == "" {
		command = DefaultCommand
	}
	path, err := exec.LookPath(command)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, queryArgs...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run %s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	gpus, err := Parse(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("parse %s output: %w", path, err)
	}
	return gpus, nil
}

// Parse reads the output of nvidia-smi --query-gpu=index,name,memory.total
// --format=csv,noheader,nounits: one line per GPU, memory in MiB.
func Parse(out []byte) ([]protocol.GPU, error) {
	var gpus []protocol.GPU
	for n, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want 3 comma-separated fields, got %q", n+1, line)
		}
		idx, err := strconv.Atoi(strings.TrimSpace(f[0]))
		if err != nil || idx < 0 {
			return nil, fmt.Errorf("line %d: bad index %q", n+1, f[0])
		}
		g := protocol.GPU{Index: idx, Type: NormalizeType(f[1])}
		if mem := strings.TrimSpace(f[2]); mem != "" && mem != "[N/A]" {
			mib, err := strconv.ParseInt(mem, 10, 64)
			if err != nil || mib < 0 {
				return nil, fmt.Errorf("line %d: bad memory.total %q", n+1, f[2])
			}
			g.MemoryBytes = mib << 20
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}

// vendorWords are dropped from a product name before picking the model.
var vendorWords = map[string]bool{"nvidia": true, "tesla": true, "geforce": true, "quadro": true}

// NormalizeType turns a product name into the short lower-case type that
// label selectors and resources use: "NVIDIA H100 80GB HBM3" → "h100",
// "NVIDIA A100-SXM4-80GB" → "a100", "Tesla T4" → "t4",
// "NVIDIA GeForce RTX 4090" → "rtx4090". It is the first word holding a
// digit (joined to a preceding "rtx"/"gtx" when that word is all digits);
// a name with no such word is lower-cased with spaces replaced by '-'.
func NormalizeType(name string) string {
	words := strings.FieldsFunc(strings.ToLower(name), func(r rune) bool {
		return unicode.IsSpace(r) || r == '-' || r == '_' || r == '/'
	})
	var kept []string
	for _, w := range words {
		if !vendorWords[w] {
			kept = append(kept, w)
		}
	}
	for i, w := range kept {
		if !strings.ContainsFunc(w, unicode.IsDigit) {
			continue
		}
		if i > 0 && (kept[i-1] == "rtx" || kept[i-1] == "gtx") && isDigits(w) {
			return kept[i-1] + w
		}
		return w
	}
	return strings.Join(kept, "-")
}

func isDigits(s string) bool {
	for _, r := range s {
		if !unicode.IsDigit(r) {
			return false
		}
	}
	return s != ""
}
