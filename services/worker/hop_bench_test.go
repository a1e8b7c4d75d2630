package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
)

// chainOfN is app "c": n "chain" deployments D1 → … → Dn and a "leaf" at
// the end (D<n+1>), alternating between the workers zones.
func chainOfN(n int, zones ...string) (config.Application, map[string]string) {
	app := config.Application{Name: "c", RoutePrefix: "/c", Ingress: "D1"}
	on := map[string]string{}
	for i := 1; i <= n+1; i++ {
		name := fmt.Sprintf("D%d", i)
		d := config.Deployment{Name: name, Handler: "leaf", MaxOngoingRequests: 64}
		if i <= n {
			d.Handler, d.UserConfig = "chain", json.RawMessage(fmt.Sprintf(`{"next":"D%d"}`, i+1))
		}
		app.Deployments = append(app.Deployments, d)
		on[name] = zones[(i-1)%len(zones)]
	}
	return app, on
}

// BenchmarkHop measures handle hops with real workers in this process
// (each on its own NATS connection to an embedded server): a request
// through a chain of 4 handle calls, within one worker and across two,
// next to a request to the leaf alone, 32 at a time. Compare the ns/op
// of the chains with the leaf's: the difference / 4 is a hop's cost.
func BenchmarkHop(b *testing.B) {
	for _, tc := range []struct {
		name  string
		hops  int
		zones []string
	}{{"leaf", 0, []string{"w1"}}, {"local4", 4, []string{"w1"}}, {"remote4", 4, []string{"w1", "w2"}}} {
		b.Run(tc.name, func(b *testing.B) {
			reg := chainRegistry(b)
			w := startWorkers(b, reg, "w1", "w2")
			app, on := chainOfN(tc.hops, tc.zones...)
			w.deploy(app, reg, on)
			c := w.client()
			ctx := context.Background()
			body := []byte(`{"text":"hello"}`)
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Call(ctx, "c", "D1", &serve.Request{Method: "POST", Path: "/", Body: body}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
