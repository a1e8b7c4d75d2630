package main

import (
	"context"
	"io"
	"testing"
)

func TestRunHelp(t *testing.T) {
	if err := run(context.Background(), []string{"--help"}, nil, io.Discard); err != nil {
		t.Errorf("run(--help) = %v, want nil", err)
	}
}

func TestRunInvalidConfig(t *testing.T) {
	if err := run(context.Background(), []string{"--gpu_detect", "nvml"}, nil, io.Discard); err == nil {
		t.Errorf("run(--gpu_detect nvml) = nil, want a configuration error")
	}
}
