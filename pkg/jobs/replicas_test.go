package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
)

// On a 3-node cluster a Queue with Replicas(3) creates every stream,
// bucket and object store of a method with 3 replicas, and one with
// Replicas(1) adopts them as they are.
func TestQueueReplicas(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	js := natstest.JetStream(t, natstest.Conn(t, nodes[1]))
	pn, _ := protocol.NewNames("t")
	names := Names{Names: pn}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := NewQueue(js, names, zerolog.Nop(), Replicas(3)).Ensure(ctx, testApp, testDep, method("train")); err != nil {
		t.Fatal(err)
	}
	if err := NewQueue(js, names, zerolog.Nop(), Replicas(1)).Ensure(ctx, testApp, testDep, method("train")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{names.Stream(testApp, "train"), "KV_" + names.Records(testApp, "train"),
		"OBJ_" + names.Objects(testApp, "train"), names.DLQStream()} {
		st, err := js.Stream(ctx, s)
		if err != nil {
			t.Fatalf("stream %s: %v", s, err)
		}
		if got := st.CachedInfo().Config.Replicas; got != 3 {
			t.Errorf("%s replicas = %d, want 3", s, got)
		}
	}
}
