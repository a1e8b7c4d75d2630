package reconcile

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/services/scheduler/internal/plan"
	"github.com/rs/zerolog"
)

// BenchmarkFollowAgainstPass measures what following the Replicas bucket
// adds to a reconcile pass: taking the follower's copy of 1,000 records,
// every one rewritten since the last copy (heartbeats), against the pass
// itself (plan.Step and plan.BuildStatus) over the same fleet, in the
// same run. The loop takes a copy only before a pass, so follow/pass is
// the overhead per pass.
func BenchmarkFollowAgainstPass(b *testing.B) {
	const workers, deps, perDep = 20, 10, 100
	tf := natstest.NewFleet(b)
	var yaml string
	for d := range deps {
		yaml += fmt.Sprintf("  - name: d%d\n    handler: h\n    num_replicas: %d\n    resources: {cpu: 0.1}\n", d, perDep)
	}
	cfg, err := config.Parse([]byte("applications:\n- name: a\n  route_prefix: /a\n  ingress: d0\n  deployments:\n" + yaml))
	if err != nil {
		b.Fatal(err)
	}
	in := plan.Input{Config: cfg, Workers: map[string]protocol.WorkerInfo{}, Records: map[string]protocol.ReplicaInfo{},
		StartTimeout: time.Minute, Now: time.Now()}
	for w := range workers {
		id := fmt.Sprintf("w%d", w)
		in.Workers[id] = protocol.WorkerInfo{ID: id, CPU: 64, MemoryBytes: 1 << 40, Handlers: []string{"h"}}
	}
	st, _ := plan.Step(plan.NewState(), in)
	for id, r := range st.Replicas {
		rec := protocol.ReplicaInfo{ID: id, App: r.Spec.App, Deployment: r.Spec.Deployment, WorkerID: r.WorkerID,
			Version: r.Spec.Version, State: protocol.ReplicaRunning, ConfigVersion: r.Spec.ConfigVersion(), Heartbeat: in.Now}
		in.Records[id] = rec
		natstest.PutReplica(b, tf.Buckets, rec)
	}
	st, _ = plan.Step(st, in)

	l := &leader{log: zerolog.Nop(), records: map[string]record{}}
	src := follow(tf.NC, tf.Buckets.Replicas, nil, fleetstate.HeartbeatInterval, l.log, make(chan struct{}, 1), decodeRecord,
		func(map[string]stored[protocol.ReplicaInfo]) {}).(*bucketSource[protocol.ReplicaInfo])
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	select {
	case <-src.f.Ready():
	case <-time.After(30 * time.Second):
		b.Fatal("the follower never read the bucket")
	}
	if n := len(src.f.Snapshot()); n != deps*perDep {
		b.Fatalf("follower holds %d records, want %d", n, deps*perDep)
	}

	b.Run("pass", func(b *testing.B) {
		for b.Loop() {
			next, res := plan.Step(st, in)
			_ = plan.BuildStatus(&next, in, res, "s1", nil)
		}
	})
	b.Run("follow", func(b *testing.B) {
		now := in.Now
		for i := 0; b.Loop(); i++ {
			m := src.f.Snapshot()
			for k, e := range m { // as if every record was rewritten
				e.Rev += uint64(i + 1)
				m[k] = e
			}
			l.onReplicas(m, now)
			if got := len(l.liveRecords(now)); got != deps*perDep {
				b.Fatalf("%d live records, want %d", got, deps*perDep)
			}
		}
	})
}
