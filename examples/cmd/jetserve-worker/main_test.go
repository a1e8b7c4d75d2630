package main

import (
	"context"
	"io"
	"testing"

	"github.com/jetserve/jetserve/services/worker"
)

func TestRunHelp(t *testing.T) {
	if err := worker.Command(registry())(context.Background(), []string{"--help"}, nil, io.Discard); err != nil {
		t.Errorf("worker --help = %v, want nil", err)
	}
}

func TestRunInvalidConfig(t *testing.T) {
	if err := worker.Command(registry())(context.Background(), []string{"--gpu_detect", "nvml"}, nil, io.Discard); err == nil {
		t.Errorf("worker --gpu_detect nvml = nil, want a configuration error")
	}
}
