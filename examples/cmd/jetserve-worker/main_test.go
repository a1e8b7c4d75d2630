package main

import (
	"context"
	"io"
	"strings"
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

func TestRunInvalidGCMinHeap(t *testing.T) {
	err := worker.Command(registry())(context.Background(), []string{"--gc_min_heap", "big"}, nil, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "gc_min_heap") {
		t.Errorf("worker --gc_min_heap big = %v, want a configuration error naming gc_min_heap", err)
	}
}
