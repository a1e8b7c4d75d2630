package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
)

// bins are the binaries TestMain built; nil in -short mode.
var bins *fleet.Binaries

func TestMain(m *testing.M) {
	if url := os.Getenv(responderEnv); url != "" {
		// This binary re-executed as a responder process of BenchmarkSweep
		// or BenchmarkComposition.
		os.Exit(runResponder(url, os.Getenv(responderHopsEnv)))
	}
	flag.Parse()
	if testing.Short() {
		fmt.Fprintln(os.Stderr, "e2e: -short given: skipping the end-to-end suite (it builds every binary and runs the fleet as processes)")
		os.Exit(m.Run())
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "jetserve-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := fleet.Root(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	bins = fleet.Build(ctx, root, dir, fleet.BuildOptions{
		Race: os.Getenv("JETSERVE_E2E_RACE") != "",
		Log: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, format+"\n", args...)
		},
	})
	fmt.Fprintf(os.Stderr, "e2e: built in %v\n", time.Since(start).Round(time.Millisecond))
	return m.Run()
}

// startFleet starts a fleet for tb, or skips tb in -short mode.
func startFleet(tb testing.TB, opt fleet.Options) *fleet.Fleet {
	tb.Helper()
	if testing.Short() {
		tb.Skip("e2e: skipped in -short mode")
	}
	return fleet.Start(tb, bins, opt)
}
