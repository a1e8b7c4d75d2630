package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/jetserve/jetserve/services/worker"
	"github.com/nats-io/nats-server/v2/server"
)

// kv is the fleet's buckets as the worker tests write them (as the
// scheduler would) and read them back (as the worker reports).
type kv struct {
	t testing.TB
	b *fleetstate.Buckets
}

// applyConfig stores apps as the applied config.
func (k kv) applyConfig(apps ...config.Application) {
	k.t.Helper()
	natstest.PutConfig(k.t, k.b, config.ServeConfig{Applications: apps})
}

// putAssignment writes worker id's assignment as is.
func (k kv) putAssignment(id string, epoch uint64, specs ...protocol.ReplicaSpec) {
	k.t.Helper()
	b, err := json.Marshal(protocol.Assignment{WorkerID: id, Replicas: specs, Epoch: epoch})
	if err != nil {
		k.t.Fatal(err)
	}
	if _, err := k.b.Assignments.Put(context.Background(), protocol.AssignmentKey(id), b); err != nil {
		k.t.Fatal(err)
	}
}

// leaseUpTo renews a scheduler lease until the leases bucket's revisions
// reach epoch, as a scheduler elected at that epoch would have (workers
// refuse assignments of epochs beyond it).
func (k kv) leaseUpTo(epoch uint64) {
	k.t.Helper()
	for {
		rev, err := k.b.Leases.Put(context.Background(), "scheduler", []byte("test-scheduler"))
		if err != nil {
			k.t.Fatal(err)
		}
		if rev >= epoch {
			return
		}
	}
}

// record returns s's replica record, on whichever worker runs it (a
// record's key names its worker: app.deployment.worker.replica).
func (k kv) record(s protocol.ReplicaSpec) (protocol.ReplicaInfo, bool) {
	ctx := context.Background()
	l, err := k.b.Replicas.ListKeysFiltered(ctx, protocol.Token(s.App)+"."+protocol.Token(s.Deployment)+".*."+protocol.Token(s.ID))
	if err != nil {
		return protocol.ReplicaInfo{}, false
	}
	var key string
	for name := range l.Keys() {
		key = name
	}
	if key == "" {
		return protocol.ReplicaInfo{}, false
	}
	e, err := k.b.Replicas.Get(ctx, key)
	if err != nil {
		return protocol.ReplicaInfo{}, false
	}
	var info protocol.ReplicaInfo
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		k.t.Fatalf("replica record: %v", err)
	}
	return info, true
}

func (k kv) waitState(s protocol.ReplicaSpec, want protocol.ReplicaState) protocol.ReplicaInfo {
	k.t.Helper()
	var info protocol.ReplicaInfo
	waitfor.True(k.t, waitLimit, fmt.Sprintf("replica %s %s", s.ID, want), func() bool {
		var ok bool
		info, ok = k.record(s)
		return ok && info.State == want
	})
	return info
}

func (k kv) waitGone(s protocol.ReplicaSpec) {
	k.t.Helper()
	waitfor.True(k.t, waitLimit, "replica "+s.ID+" record deleted", func() bool {
		_, ok := k.record(s)
		return !ok
	})
}

// testConfig is a worker id on ns with 4 CPUs and 16Gi, no ops listener
// and no GPU detection.
func testConfig(ns *server.Server, id string) worker.Config {
	cfg := worker.DefaultConfig()
	cfg.NATS.URL = ns.ClientURL()
	cfg.OpsAddr = ""
	cfg.ID = id
	cfg.GPUDetect = worker.GPUDetectOff
	cfg.Resources.CPU = 4
	cfg.Resources.Memory = "16Gi"
	return cfg
}

// chainTo is a deployment that calls next with its request's body and
// answers "chain>" and next's answer.
func chainTo(next *serve.Handle) serve.Handler {
	return serve.HandlerFunc(func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
		resp, err := next.Call(ctx, &serve.Request{Body: req.Body})
		if err != nil {
			return nil, err
		}
		return &serve.Response{Body: append([]byte("chain>"), resp.Body...)}, nil
	})
}
