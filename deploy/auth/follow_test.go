package auth_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Every service follows the fleet's buckets (kvfollow: a pull consumer per
// watch), and the scheduler's dashboard each method's job records, under
// its own user's permissions: each reads a value stored by the operator.
func TestServicesFollowTheirBuckets(t *testing.T) {
	e := start(t)
	_, jn := e.setup(t)
	ojs, _ := jetstream.New(e.conn(t, auth.Operator))
	fleet := []string{e.names.BucketApps(), e.names.BucketWorkers(), e.names.BucketAssignments(), e.names.BucketReplicas(),
		e.names.BucketStatus(), e.names.BucketLeases(), e.names.BucketScale(), e.names.BucketHandlers()}
	for _, b := range fleet {
		kv, err := ojs.KeyValue(ctx(t), b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx(t), "seen", []byte("1")); err != nil {
			t.Fatalf("put in %s as the operator: %v", b, err)
		}
	}
	follows := map[string][]string{auth.Scheduler: {jn.Records("text", "train")}}
	for _, role := range auth.Services {
		follows[role] = append(follows[role], fleet...)
	}
	for role, buckets := range follows {
		t.Run(role, func(t *testing.T) {
			nc := e.conn(t, role)
			js, _ := jetstream.New(nc)
			for _, b := range buckets {
				kv, err := js.KeyValue(ctx(t), b)
				if err != nil {
					t.Fatalf("open %s as %s: %v", b, role, err)
				}
				o := kvfollow.Options[json.RawMessage]{Log: zerolog.Nop()}
				if role == auth.Worker && b == e.names.BucketAssignments() {
					// A worker may follow assignments' keys only (its
					// own, for a per-worker user; any, for this pool
					// user), never the whole bucket.
					o.Keys = []string{protocol.AssignmentKey("*")}
					o.Push = true         // pushed: it may not pull there
					o.TrustReplica = true // no leader reads of the assignments (see the worker)
				}
				f := kvfollow.New(nc, kv, o)
				c, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- f.Run(c) }()
				select {
				case <-f.Ready():
				case <-time.After(5 * time.Second):
					t.Errorf("%s cannot follow %s: not ready after 5s", role, b)
				}
				cancel()
				<-done
			}
		})
	}
}
