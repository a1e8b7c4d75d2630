package fleetstate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T) (*fleetstate.Buckets, jetstream.JetStream, protocol.Names) {
	t.Helper()
	f := natstest.NewFleet(t)
	return f.Buckets, f.JS, f.Names
}

// Ensure creates every bucket under the prefix with its declared TTL and
// history, and a second call adopts them.
func TestEnsure(t *testing.T) {
	b, js, names := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := fleetstate.Ensure(ctx, js, names, 1); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	tests := []struct {
		kv      jetstream.KeyValue
		name    string
		ttl     time.Duration
		history int64
	}{
		{b.Apps, "jetserve_apps", 0, 10},
		{b.Workers, "jetserve_workers", fleetstate.WorkerTTL, 1},
		{b.Assignments, "jetserve_assignments", 0, 5},
		{b.Replicas, "jetserve_replicas", fleetstate.ReplicaTTL, 1},
		{b.Status, "jetserve_status", 0, 1},
		{b.Leases, "jetserve_leases", 0, 1},
		{b.Scale, "jetserve_scale", 0, 10},
		{b.Handlers, "jetserve_handlers", 0, 1},
	}
	for _, tc := range tests {
		st, err := tc.kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Bucket() != tc.name || st.TTL() != tc.ttl || st.History() != tc.history {
			t.Errorf("bucket %s: TTL %v, history %d; want %s with %v, %d", st.Bucket(), st.TTL(), st.History(), tc.name, tc.ttl, tc.history)
		}
	}
}

// Bind creates nothing: on a server without the buckets it is
// ErrNotCreated and leaves no bucket nor the bodies store behind; after
// Ensure (the scheduler's) it opens them all.
func TestBind(t *testing.T) {
	ns := natstest.Server(t)
	js := natstest.JetStream(t, natstest.Conn(t, ns))
	names, _ := protocol.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := fleetstate.Bind(ctx, js, names); !errors.Is(err, fleetstate.ErrNotCreated) {
		t.Fatalf("Bind on an empty server = %v, want ErrNotCreated", err)
	}
	if n := len(streamNames(ctx, t, js)); n != 0 {
		t.Fatalf("Bind left %d streams, want none", n)
	}
	if _, err := fleetstate.Ensure(ctx, js, names, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := js.ObjectStore(ctx, names.BucketBodies()); err != nil {
		t.Errorf("Ensure: the bodies object store = %v", err)
	}
	b, err := fleetstate.Bind(ctx, js, names)
	if err != nil {
		t.Fatalf("Bind after Ensure = %v", err)
	}
	if b.Assignments == nil || b.Handlers == nil || b.Assignments.Bucket() != names.BucketAssignments() {
		t.Errorf("Bind after Ensure = %+v, want every bucket", b)
	}
}

func streamNames(ctx context.Context, t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	var out []string
	l := js.StreamNames(ctx)
	for n := range l.Name() {
		out = append(out, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReadAll(t *testing.T) {
	b, _, _ := open(t)
	ctx := context.Background()
	for k, v := range map[string]string{"a": "1", "b": "2"} {
		if _, err := b.Scale.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	if err := fleetstate.ReadAll(ctx, b.Scale, func(k string, v []byte) { got[k] = string(v) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"] != "1" || got["b"] != "2" {
		t.Fatalf("ReadAll = %v, want a:1 b:2", got)
	}
}

func prio(p int) *int { return &p }

// NewAsyncTable merges a deployment's async_methods over its handler's
// SDK defaults, lists configured methods of handlers no worker
// advertised, and lets the first deployment of an app win a method name.
func TestAsyncTable(t *testing.T) {
	sc := config.ServeConfig{Applications: []config.Application{
		{Name: "text", Deployments: []config.Deployment{
			{Name: "Trainer", Handler: "text.Trainer", AsyncMethods: []config.AsyncMethod{{Name: "train", MaxRunning: 2}}},
			{Name: "Other", Handler: "text.Other"}, // also declares train: the first deployment wins
			{Name: "Configured", Handler: "nobody.Advertises", AsyncMethods: []config.AsyncMethod{{Name: "embed"}}},
		}},
		{Name: "plain", Deployments: []config.Deployment{{Name: "Echo", Handler: "diag.Echo"}}},
	}}
	sdk := fleetstate.SDKDefaults{
		"text.Trainer": {{Name: "train", MaxQueued: 7, Priority: prio(3)}, {Name: "eval"}},
		"text.Other":   {{Name: "train"}},
	}
	tab := fleetstate.NewAsyncTable(sc, sdk)
	train, ok := tab.Lookup("text", "train")
	if !ok || train.Deployment != "Trainer" || train.Config.MaxQueued != 7 || train.Config.MaxRunning != 2 || *train.Config.Priority != 3 {
		t.Fatalf("Lookup(text, train) = %+v, %v; want Trainer's, max_queued 7 (SDK), max_running 2 (config), priority 3", train, ok)
	}
	if train.Config.LeaseTimeout.D() <= 0 {
		t.Errorf("train has no platform defaults: %+v", train.Config)
	}
	if _, ok := tab.Lookup("text", "embed"); !ok {
		t.Error("a configured method of a handler no worker advertises is missing")
	}
	if _, ok := tab.Lookup("plain", "train"); ok {
		t.Error("Lookup(plain, train) found a method of another app")
	}
	if n := tab.Len(); n != 3 {
		t.Errorf("Len() = %d, want 3 (train, eval, embed)", n)
	}
	if of := tab.Of("text", "Trainer"); len(of) != 2 || of[0].Config.Name != "train" || of[1].Config.Name != "eval" {
		t.Errorf("Of(text, Trainer) = %+v, want train and eval", of)
	}
	if of := tab.Of("text", "Other"); len(of) != 0 {
		t.Errorf("Of(text, Other) = %+v, want none (Trainer has train)", of)
	}
	var none *fleetstate.AsyncTable
	if _, ok := none.Lookup("a", "b"); ok || none.Len() != 0 || none.Methods() != nil {
		t.Error("a nil table has methods")
	}
}

func TestSDKDefaultsAdd(t *testing.T) {
	sdk := fleetstate.SDKDefaults{}
	h := protocol.HandlerInfo{Handler: "h", Async: []config.AsyncMethod{{Name: "m"}}, Worker: "w1"}
	if !sdk.Add(h) {
		t.Error("first Add = false, want a change")
	}
	if sdk.Add(h) {
		t.Error("same Add = true, want no change")
	}
	h.Async = []config.AsyncMethod{{Name: "m", MaxQueued: 3}}
	if !sdk.Add(h) || sdk["h"][0].MaxQueued != 3 {
		t.Errorf("changed defaults: %+v", sdk)
	}
	if sdk.Add(protocol.HandlerInfo{Handler: "other"}) == false || len(sdk["h"]) != 1 {
		t.Error("another handler's declaration changed h's defaults")
	}
}

// The follower builds the table from the buckets, keeps a handler's
// methods after its worker's record is gone, and follows config changes.
func TestAsyncFollower(t *testing.T) {
	b, js, _ := open(t)
	nc := js.Conn()
	ctx, cancel := context.WithCancel(context.Background())
	f := fleetstate.NewAsyncFollower(nc, b, zerolog.Nop())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	waitfor.True(t, 10*time.Second, "the initial values", func() bool { return f.Ready() == nil })
	if f.Table().Len() != 0 {
		t.Fatalf("table of an empty fleet has %d methods", f.Table().Len())
	}
	put := func(kv jetstream.KeyValue, key string, v any) {
		t.Helper()
		raw, _ := json.Marshal(v)
		if _, err := kv.Put(context.Background(), key, raw); err != nil {
			t.Fatal(err)
		}
	}
	put(b.Workers, protocol.WorkerKey("w1"), protocol.WorkerInfo{ID: "w1"})
	put(b.Handlers, protocol.HandlerKey("h"), protocol.HandlerInfo{Handler: "h", Async: []config.AsyncMethod{{Name: "train", MaxQueued: 5}}, Worker: "w1"})
	put(b.Apps, fleetstate.ConfigKey, config.ServeConfig{Applications: []config.Application{
		{Name: "app", Deployments: []config.Deployment{{Name: "d", Handler: "h"}}}}})
	waitfor.True(t, 10*time.Second, "app/train in the table", func() bool {
		m, ok := f.Table().Lookup("app", "train")
		return ok && m.Config.MaxQueued == 5
	})
	if err := b.Workers.Delete(context.Background(), protocol.WorkerKey("w1")); err != nil {
		t.Fatal(err)
	}
	put(b.Apps, fleetstate.ConfigKey, config.ServeConfig{Applications: []config.Application{
		{Name: "app2", Deployments: []config.Deployment{{Name: "d", Handler: "h"}}}}})
	waitfor.True(t, 10*time.Second, "app2/train, from the defaults of a worker that left", func() bool {
		_, ok := f.Table().Lookup("app2", "train")
		return ok
	})
	select {
	case <-f.Changed():
	default:
		t.Error("Changed() holds no signal after the table changed")
	}
}

// The config hooks see each config after the table built from it: what a
// caller derives from a config (the ingress's routes) is never newer than
// the async method table, so a new application's async method is never
// routed as a sync call.
func TestAsyncFollowerConfigHooks(t *testing.T) {
	b, js, _ := open(t)
	f := fleetstate.NewAsyncFollower(js.Conn(), b, zerolog.Nop())
	var synced atomic.Bool
	seen := make(chan string, 16)
	f.SetConfigHooks(fleetstate.ConfigHooks{
		OnConfig: func(sc config.ServeConfig) {
			for _, a := range sc.Applications {
				_, ok := f.Table().Lookup(a.Name, "train")
				seen <- fmt.Sprintf("%s:%v", a.Name, ok)
			}
		},
		OnSynced: func() { synced.Store(true) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	waitfor.True(t, 10*time.Second, "OnSynced with no config stored", synced.Load)
	raw, _ := json.Marshal(config.ServeConfig{Applications: []config.Application{{Name: "app",
		Deployments: []config.Deployment{{Name: "d", Handler: "h", AsyncMethods: []config.AsyncMethod{{Name: "train"}}}}}}})
	if _, err := b.Apps.Put(context.Background(), fleetstate.ConfigKey, raw); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-seen:
		if got != "app:true" {
			t.Fatalf("OnConfig saw %s, want app:true (its async method already in the table)", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnConfig not called after the config was stored")
	}
}
