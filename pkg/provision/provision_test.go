package provision_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provision"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// While leading, the provisioner creates each async method's streams
// when the config names it or a handler declares it, and updates them
// when its settings change.
func TestLeadCreatesAndUpdates(t *testing.T) {
	f := natstest.NewFleet(t)
	names := jobs.Names{Names: f.Names}
	apply := func(maxQueued int) {
		natstest.PutConfigText(t, f.Buckets, fmt.Sprintf(`applications:
- name: ml
  route_prefix: /ml
  ingress: Trainer
  deployments:
  - name: Trainer
    handler: trainer
    async_methods: [{name: fit, max_queued: %d, max_running: 1}]
`, maxQueued))
	}
	apply(5)
	p := provision.New(f.NC, f.JS, names, f.Buckets, 1, zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { _ = p.Run(ctx) })
	wg.Go(func() { p.Lead(ctx) })

	maxMsgs := func(method string) int64 {
		s, err := f.JS.Stream(ctx, names.Stream("ml", method))
		if err != nil {
			return -2
		}
		return s.CachedInfo().Config.MaxMsgs
	}
	checks := []func() error{
		func() error { _, err := f.JS.KeyValue(ctx, names.Records("ml", "fit")); return err },
		func() error { _, err := f.JS.ObjectStore(ctx, names.Objects("ml", "fit")); return err },
		func() error { _, err := f.JS.Stream(ctx, names.DLQStream()); return err },
		func() error {
			s, err := f.JS.Stream(ctx, names.Stream("ml", "fit"))
			if err == nil {
				_, err = s.Consumer(ctx, jobs.Consumer)
			}
			return err
		},
	}
	waitfor.True(t, 20*time.Second, "fit's stream, consumer, records, objects and the dead-letter stream", func() bool {
		for _, c := range checks {
			if c() != nil {
				return false
			}
		}
		return maxMsgs("fit") == 6 // max_queued + max_running
	})

	// A handler declares a workflow: created with its stream.
	info, _ := json.Marshal(protocol.HandlerInfo{Handler: "trainer", Worker: "w1", Async: []config.AsyncMethod{{Name: "flow", Workflow: true}}})
	if _, err := f.Buckets.Handlers.Put(ctx, protocol.HandlerKey("trainer"), info); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 20*time.Second, "the declared workflow's streams", func() bool {
		_, err := f.JS.Stream(ctx, names.WorkflowStream("ml", "flow"))
		return err == nil && maxMsgs("flow") > 0
	})

	// The config changes fit's max_queued: updated.
	apply(9)
	waitfor.True(t, 20*time.Second, "fit's stream updated", func() bool { return maxMsgs("fit") == 10 })
}
