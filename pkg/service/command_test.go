package service

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// Command loads the defaults' config from flags and environment, validates
// it and hands it to run; -h prints the options and runs nothing; an
// invalid config and run's own error are returned.
func TestCommand(t *testing.T) {
	errRun := errors.New("run failed")
	var got *testConfig
	cmd := Command("test", defaults, func(_ context.Context, c testConfig, d Deps) error {
		got = &c
		if d.NC != nil || d.Metrics != nil {
			t.Errorf("run got Deps %+v, want only the logger set", d)
		}
		if c.Workers == 7 {
			return errRun
		}
		return nil
	})
	ctx := context.Background()

	if err := cmd(ctx, []string{"--workers", "5"}, []string{"JETSERVE_NATS_URL=nats://env:4222"}, &bytes.Buffer{}); err != nil {
		t.Fatalf("Command(--workers 5) = %v", err)
	}
	if got == nil || got.Workers != 5 || got.NATS.URL != "nats://env:4222" || got.Addr != defaults().Addr {
		t.Fatalf("run got %+v, want the defaults with workers 5 and the environment's NATS URL", got)
	}

	got = nil
	var usage bytes.Buffer
	if err := cmd(ctx, []string{"-h"}, nil, &usage); err != nil || got != nil {
		t.Errorf("Command(-h) = %v, ran %v; want nil and no run", err, got != nil)
	}
	if !strings.Contains(usage.String(), "workers") {
		t.Errorf("Command(-h) printed %q, want the options listed", usage.String())
	}

	if err := cmd(ctx, []string{"--nats.replicas", "0"}, nil, &bytes.Buffer{}); err == nil ||
		!strings.Contains(err.Error(), "invalid configuration") || !strings.Contains(err.Error(), "nats.replicas") || got != nil {
		t.Errorf("Command(--nats.replicas 0) = %v, ran %v; want an invalid configuration error naming nats.replicas and no run", err, got != nil)
	}

	if err := cmd(ctx, []string{"--workers", "7"}, nil, &bytes.Buffer{}); !errors.Is(err, errRun) {
		t.Errorf("Command(a run that fails) = %v, want %v", err, errRun)
	}
}
