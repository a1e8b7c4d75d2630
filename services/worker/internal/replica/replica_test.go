package replica

import (
	"context"
	"encoding/json"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/rs/zerolog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestInPlaceAndSameSpec(t *testing.T) {
	base := protocol.ReplicaSpec{
		ID: "r1", App: "a", Deployment: "d", Handler: "h", Version: "v1",
		UserConfig: json.RawMessage(`{"a": 1}`), MaxOngoingRequests: 5, CPU: 1, GPUIndices: []int{0},
		GracefulShutdownTimeout: config.Duration(time.Second),
	}
	tests := []struct {
		name           string
		mutate         func(*protocol.ReplicaSpec)
		inPlace, equal bool
	}{
		{"identical", func(*protocol.ReplicaSpec) {}, true, true},
		{"json spacing only", func(s *protocol.ReplicaSpec) { s.UserConfig = json.RawMessage(`{"a":1}`) }, true, true},
		{"user_config", func(s *protocol.ReplicaSpec) { s.UserConfig = json.RawMessage(`{"a":2}`) }, true, false},
		{"max_ongoing", func(s *protocol.ReplicaSpec) { s.MaxOngoingRequests = 9 }, true, false},
		{"graceful timeout", func(s *protocol.ReplicaSpec) { s.GracefulShutdownTimeout = 0 }, true, false},
		{"async_methods", func(s *protocol.ReplicaSpec) { s.AsyncMethods = []config.AsyncMethod{{Name: "train"}} }, true, false},
		{"empty async_methods", func(s *protocol.ReplicaSpec) { s.AsyncMethods = []config.AsyncMethod{} }, true, true},
		{"pinned_only", func(s *protocol.ReplicaSpec) { s.PinnedOnly = true }, true, false},
		{"version", func(s *protocol.ReplicaSpec) { s.Version = "v2" }, false, false},
		{"gpus", func(s *protocol.ReplicaSpec) { s.GPUIndices = []int{1} }, false, false},
		{"handler", func(s *protocol.ReplicaSpec) { s.Handler = "other" }, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := base
			next.GPUIndices = append([]int(nil), base.GPUIndices...)
			tt.mutate(&next)
			if got := InPlace(base, next); got != tt.inPlace {
				t.Errorf("InPlace = %v, want %v", got, tt.inPlace)
			}
			if got := SameSpec(base, next); got != tt.equal {
				t.Errorf("SameSpec = %v, want %v", got, tt.equal)
			}
		})
	}
}

// TestCallEndpointStats: the call endpoint's row of `nats micro stats`
// gives the handler's total time to the nanosecond (the sum of what each
// request took, not an average multiplied back), its counts, and the mean
// in Data.
func TestCallEndpointStats(t *testing.T) {
	tests := []struct {
		name   string
		took   []time.Duration
		failed int // the first failed requests failed
	}{
		{"none", nil, 0},
		{"one", []time.Duration{1_234_567}, 0},
		{"uneven", []time.Duration{1, 999_999, 3*time.Second + 7, 333_333_333, 2_500_001}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Replica{}
			var want time.Duration
			r.mu.Lock()
			r.ongoing = len(tc.took) // each settled below
			for i, d := range tc.took {
				r.settleLocked(d, i < tc.failed)
				want += d
			}
			r.mu.Unlock()
			es := r.callEndpointStats()
			if es.ProcessingTime != want || es.NumRequests != len(tc.took) || es.NumErrors != tc.failed {
				t.Errorf("callEndpointStats() = %d requests, %d errors, %d ns; want %d, %d, %d ns",
					es.NumRequests, es.NumErrors, es.ProcessingTime, len(tc.took), tc.failed, want)
			}
			var cs protocol.CallStats
			if err := json.Unmarshal(es.Data, &cs); err != nil {
				t.Fatalf("decode Data %s: %v", es.Data, err)
			}
			wantMS := 0.0
			if n := len(tc.took); n > 0 {
				wantMS = float64(want) / float64(time.Millisecond) / float64(n)
			}
			if cs.Served != uint64(len(tc.took)) || math.Abs(cs.AverageMS-wantMS) > 1e-9 {
				t.Errorf("callEndpointStats().Data = %+v, want %d served, average %v ms", cs, len(tc.took), wantMS)
			}
		})
	}
}

// TestRepliesGoOutTogether: the replies of requests whose handlers finish
// at once are written to the socket together (the outbox), not one write
// each; every request is answered, and none is held once answered.
func TestRepliesGoOutTogether(t *testing.T) {
	const n = 32
	tf := natstest.NewFleet(t)
	nc, counted := natstest.CountedConn(t, tf.NS)
	var entered atomic.Int32
	release := make(chan struct{})
	h := serve.HandlerFunc(func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
		if entered.Add(1) == n {
			close(release)
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &serve.Response{Status: 200, Body: req.Body}, nil
	})
	r := Start(Params{NC: nc, Names: tf.Names, Records: tf.Buckets.Replicas, WorkerID: "w1", Log: zerolog.Nop(),
		Spec: protocol.ReplicaSpec{ID: "r1", App: "a", Deployment: "d", Handler: "h", MaxOngoingRequests: n},
		Ctor: func(context.Context, serve.Init) (serve.Handler, error) { return h, nil }})
	defer func() { r.Stop(); <-r.Done() }()
	caller := natstest.Conn(t, tf.NS)
	subject := tf.Names.ReplicaSubject("r1") + "." + protocol.EndpointCall
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Until the replica serves (a probe is answered once its endpoint exists).
		if _, err := caller.RequestMsg(wire.ProbeMsg(subject, "", nil), time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := counted.Load()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := wire.EncodeRequest(subject, &serve.Request{Method: "POST", Path: "/", Body: []byte("x")})
			reply, err := caller.RequestMsg(m, 10*time.Second)
			if err != nil || wire.ErrorCode(reply) != "" || string(reply.Data) != "x" {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	writes := counted.Load() - before
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), n)
	}
	t.Logf("%d writes for %d replies", writes, n)
	// A load report or two may go out meanwhile; one write per reply is n
	// (33 before the outbox). Under the race detector the scheduling
	// differs (either way: from 2 to 16 writes before the outbox).
	if writes > n/4 && !raceEnabled {
		t.Errorf("the replica wrote %d times for %d replies that were ready at once, want ≤ %d", writes, n, n/4)
	}
	for {
		r.mu.Lock()
		held := len(r.held)
		r.mu.Unlock()
		if held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still held after every reply went out", held)
		}
		time.Sleep(time.Millisecond)
	}
}
