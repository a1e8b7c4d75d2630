package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fleet simulates workers the way the real worker behaves towards the
// scheduler: it heartbeats WorkerInfo into the Workers bucket, watches the
// Assignments bucket, reports each assigned replica STARTING then (after
// startDelay) RUNNING in the Replicas bucket, answers its health endpoint,
// and deletes the record of a replica dropped from its assignment. It
// checks that no RUNNING replica of a deployment is dropped while that
// leaves fewer than floor[deployment] RUNNING.
type fleet struct {
	t          testing.TB
	nc         *nats.Conn
	names      protocol.Names
	b          *fleetstate.Buckets
	startDelay time.Duration

	mu        sync.Mutex
	workers   map[string]protocol.WorkerInfo  // guarded by mu
	records   map[string]protocol.ReplicaInfo // by replica ID; guarded by mu
	started   map[string]time.Time            // guarded by mu
	subs      map[string]*nats.Subscription   // guarded by mu
	unhealthy map[string]bool                 // guarded by mu
	floor     map[string]int                  // "app/dep" → min RUNNING; guarded by mu
	violation string                          // guarded by mu
}

// startFleet starts a server with the fleet's buckets and a fake fleet on
// it (its replicas start after startDelay), to run schedulers against.
func startFleet(t testing.TB, startDelay time.Duration) (*server.Server, *fleetstate.Buckets, *fleet) {
	t.Helper()
	tf := natstest.NewFleet(t)
	return tf.NS, tf.Buckets, newFleet(t, natstest.Conn(t, tf.NS), tf.Buckets, startDelay)
}

func newFleet(t testing.TB, nc *nats.Conn, b *fleetstate.Buckets, startDelay time.Duration) *fleet {
	names, _ := protocol.NewNames("")
	f := &fleet{t: t, nc: nc, names: names, b: b, startDelay: startDelay,
		workers: map[string]protocol.WorkerInfo{}, records: map[string]protocol.ReplicaInfo{}, started: map[string]time.Time{},
		subs: map[string]*nats.Subscription{}, unhealthy: map[string]bool{}, floor: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := b.Assignments.WatchAll(ctx)
	if err != nil {
		t.Fatalf("watch assignments: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for e := range w.Updates() {
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				var a protocol.Assignment
				id, ok := protocol.WorkerOfAssignmentKey(e.Key())
				if err := json.Unmarshal(e.Value(), &a); err == nil && ok {
					f.apply(ctx, id, a)
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		last := time.Time{}
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				f.promote(ctx, now)
				if now.Sub(last) > time.Second {
					f.heartbeat(ctx)
					last = now
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = w.Stop()
		wg.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.subs {
			_ = s.Unsubscribe()
		}
	})
	return f
}

func (f *fleet) addWorker(ctx context.Context, w protocol.WorkerInfo) {
	f.t.Helper()
	if w.Handlers == nil {
		w.Handlers = []string{"echo"}
	}
	w.Heartbeat = time.Now()
	f.mu.Lock()
	f.workers[w.ID] = w
	f.mu.Unlock()
	data, _ := json.Marshal(w)
	if _, err := f.b.Workers.Put(ctx, protocol.WorkerKey(w.ID), data); err != nil {
		f.t.Fatalf("put worker: %v", err)
	}
}

// killWorker makes a worker vanish the way an expired key does.
func (f *fleet) killWorker(ctx context.Context, id string) {
	f.t.Helper()
	f.mu.Lock()
	delete(f.workers, id)
	for rid, r := range f.records {
		if r.WorkerID == id {
			delete(f.records, rid)
			if s := f.subs[rid]; s != nil {
				_ = s.Unsubscribe()
				delete(f.subs, rid)
			}
			_ = f.b.Replicas.Purge(ctx, protocol.ReplicaKey(r.App, r.Deployment, r.WorkerID, r.ID))
		}
	}
	f.mu.Unlock()
	if err := f.b.Workers.Purge(ctx, protocol.WorkerKey(id)); err != nil {
		f.t.Fatalf("purge worker: %v", err)
	}
}

func (f *fleet) setUnhealthy(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unhealthy[id] = true
}

func (f *fleet) setFloor(key string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.floor[key] = n
}

func (f *fleet) violated() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.violation
}

func (f *fleet) putRecord(ctx context.Context, r protocol.ReplicaInfo) {
	r.Heartbeat = time.Now()
	data, _ := json.Marshal(r)
	_, _ = f.b.Replicas.Put(ctx, protocol.ReplicaKey(r.App, r.Deployment, r.WorkerID, r.ID), data)
}

func (f *fleet) runningOf(app, dep string) int {
	n := 0
	for _, r := range f.records {
		if r.App == app && r.Deployment == dep && r.State == protocol.ReplicaRunning {
			n++
		}
	}
	return n
}

func (f *fleet) apply(ctx context.Context, worker string, a protocol.Assignment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.workers[worker]; !ok {
		return
	}
	want := map[string]protocol.ReplicaSpec{}
	for _, s := range a.Replicas {
		want[s.ID] = s
	}
	for id, r := range f.records {
		if r.WorkerID != worker {
			continue
		}
		if _, ok := want[id]; ok {
			continue
		}
		delete(f.records, id)
		if r.State == protocol.ReplicaRunning {
			if n, min := f.runningOf(r.App, r.Deployment), f.floor[r.App+"/"+r.Deployment]; n < min && f.violation == "" {
				f.violation = fmt.Sprintf("dropping %s left %d RUNNING replicas of %s/%s, want >= %d", id, n, r.App, r.Deployment, min)
			}
		}
		if s := f.subs[id]; s != nil {
			_ = s.Unsubscribe()
			delete(f.subs, id)
		}
		_ = f.b.Replicas.Delete(ctx, protocol.ReplicaKey(r.App, r.Deployment, r.WorkerID, id))
	}
	for id, s := range want {
		if _, ok := f.records[id]; ok {
			continue
		}
		r := protocol.ReplicaInfo{ID: id, App: s.App, Deployment: s.Deployment, WorkerID: worker, Version: s.Version,
			State: protocol.ReplicaStarting, MaxOngoingRequests: s.MaxOngoingRequests, Subject: f.names.ReplicaSubject(id),
			StartedAt: time.Now()}
		f.records[id] = r
		f.started[id] = time.Now()
		sub, err := f.nc.Subscribe(f.names.ReplicaSubject(id)+"."+protocol.EndpointHealth, func(m *nats.Msg) {
			f.mu.Lock()
			bad := f.unhealthy[id]
			f.mu.Unlock()
			if bad {
				reply := wire.ErrorMsg(500, protocol.ErrHandler, "unhealthy")
				reply.Subject = m.Reply
				_ = m.RespondMsg(reply)
				return
			}
			_ = m.Respond(nil)
		})
		if err == nil {
			f.subs[id] = sub
		}
		f.putRecord(ctx, r)
	}
}

func (f *fleet) promote(ctx context.Context, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, r := range f.records {
		if r.State == protocol.ReplicaStarting && now.Sub(f.started[id]) >= f.startDelay {
			r.State = protocol.ReplicaRunning
			f.records[id] = r
			f.putRecord(ctx, r)
		}
	}
}

func (f *fleet) heartbeat(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.workers {
		w.Heartbeat = time.Now()
		data, _ := json.Marshal(w)
		_, _ = f.b.Workers.Put(ctx, protocol.WorkerKey(w.ID), data)
	}
	for _, r := range f.records {
		f.putRecord(ctx, r)
	}
}

// assignment reads a worker's assignment (empty when there is none).
func assignment(t testing.TB, b *fleetstate.Buckets, worker string) protocol.Assignment {
	t.Helper()
	ent, err := b.Assignments.Get(context.Background(), protocol.AssignmentKey(worker))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return protocol.Assignment{}
	}
	if err != nil {
		t.Fatalf("get assignment %s: %v", worker, err)
	}
	var a protocol.Assignment
	if err := json.Unmarshal(ent.Value(), &a); err != nil {
		t.Fatalf("decode assignment: %v", err)
	}
	return a
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var why string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not a wait for an event
	}
	t.Fatalf("condition not met within %s: %s", d, why)
}
