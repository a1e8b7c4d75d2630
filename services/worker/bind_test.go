package worker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/jetserve/jetserve/services/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// A worker started before the scheduler creates nothing: it says it
// waits for the fleet's buckets, and registers once the scheduler's part
// (fleetstate.Ensure) has created them.
func TestWorkerWaitsForTheScheduler(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js := natstest.JetStream(t, nc)
	var waiting atomic.Bool // the worker logged its retry (service.Deps.Bind)
	log := zerolog.New(zerolog.NewTestWriter(t)).Hook(zerolog.HookFunc(func(_ *zerolog.Event, _ zerolog.Level, msg string) {
		if msg == "JetStream not ready; retrying" {
			waiting.Store(true)
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	deps := service.Deps{NC: natstest.Conn(t, ns), Log: log, Metrics: prometheus.NewRegistry()}
	go func() { done <- worker.Run(ctx, testConfig(ns, workerID), deps, newDeployments(t).reg) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("worker.Run did not return after cancel")
		}
	}()
	waitfor.True(t, 20*time.Second, "the worker saying it waits for the fleet buckets", waiting.Load)
	var streams []string
	for n := range js.StreamNames(context.Background()).Name() {
		streams = append(streams, n)
	}
	if len(streams) != 0 {
		t.Fatalf("the worker created streams %v, want none", streams)
	}
	b := natstest.FleetOn(t, ns, nc).Buckets // the scheduler's part (fleetstate.Ensure)
	waitfor.True(t, 30*time.Second, "the worker's registration", func() bool {
		_, err := b.Workers.Get(context.Background(), protocol.WorkerKey(workerID))
		return err == nil
	})
}
