package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
)

// BenchmarkBatching compares, in one run through the fleet (HTTP →
// ingress → replica, every service its own process), batch.Scorer — a
// model whose cost is per call: 2 ms of device time, one call at a time,
// whatever the batch size — served batched (serve.Batcher, max_batch_size
// 32, batch_wait_timeout 2 ms) against the same model unbatched, at
// concurrency 32, and prints the ratio. Run it with
//
//	go test -run '^$' -bench Batching -benchtime 2000x ./
func BenchmarkBatching(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	const c = 32
	f := fleet.Start(b, bins, fleet.Options{})
	f.RequireHandlers(handlerScorer)
	batched := deployment{app: "batched", handler: handlerScorer, replicas: 1, cpu: 0.1, maxOngoing: 2 * c,
		userConfig: json.RawMessage(`{"call_cost":"2ms","batch":{"max_batch_size":32,"batch_wait_timeout":"2ms"}}`)}
	unbatched := deployment{app: "unbatched", handler: handlerScorer, replicas: 1, cpu: 0.1, maxOngoing: 2 * c,
		userConfig: json.RawMessage(`{"batched":false,"call_cost":"2ms"}`)}
	f.Deploy(serveConfig(b, batched.application(), unbatched.application()))
	f.WaitApp(deployTimeout, "batched", 1, nil)
	f.WaitApp(deployTimeout, "unbatched", 1, nil)

	results := map[string]*benchResult{}
	for _, name := range []string{"unbatched", "batched"} {
		b.Run(fmt.Sprintf("%s/c=%d", name, c), func(b *testing.B) {
			results[name] = closedLoop(b, f.URL()+"/"+name+"/", c)
		})
	}
	ub, bt := results["unbatched"], results["batched"]
	if ub == nil || bt == nil {
		return
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model: 2 ms per call (one at a time), c=%d\tn\tp50\tp99\treq/s\t\n", c)
	for _, name := range []string{"unbatched", "batched"} {
		r := results[name]
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%.0f\t\n", name, r.n, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.rps)
	}
	fmt.Fprintf(tw, "batched/unbatched\t\tp50 %.2fx\tp99 %.2fx\treq/s %.2fx\t\n",
		ratio(bt.p50.Seconds(), ub.p50.Seconds()), ratio(bt.p99.Seconds(), ub.p99.Seconds()), ratio(bt.rps, ub.rps))
	tw.Flush()
}

// TestMultiplexedModelIDThroughIngress sends requests carrying the
// serve_multiplexed_model_id header over HTTP: the ingress forwards it, the
// router prefers the replica that holds the model, and the replica serves
// that model. Two replicas, four tenants: each tenant's requests end on
// one replica once it is loaded.
func TestMultiplexedModelIDThroughIngress(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerClassifier)
	d := deployment{app: "tenants", handler: handlerClassifier, replicas: 2, cpu: 0.1, maxOngoing: 16,
		userConfig: json.RawMessage(`{"load_delay":"50ms"}`)}
	app := d.application()
	app.Deployments[0].MaxModelsPerReplica = 2
	f.Deploy(serveConfig(t, app))
	f.WaitApp(deployTimeout, "tenants", 2, nil)

	client := &http.Client{Timeout: 30 * time.Second}
	replicaOf := map[string]map[string]bool{} // tenant → replicas that served it
	for i := range 40 {
		tenant := fmt.Sprintf("tenant-%d", i%4)
		req, err := http.NewRequest(http.MethodPost, f.URL()+"/tenants/", strings.NewReader(`{"text":"please refund my order"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("serve_multiplexed_model_id", tenant)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST /tenants/ model %s: %v", tenant, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /tenants/ model %s = %s %s", tenant, resp.Status, body)
		}
		var out struct{ Model, Replica string }
		if err := json.Unmarshal(body, &out); err != nil || out.Model != tenant {
			t.Fatalf("POST /tenants/ model %s answered %s (%v), want that model", tenant, body, err)
		}
		if replicaOf[tenant] == nil {
			replicaOf[tenant] = map[string]bool{}
		}
		replicaOf[tenant][out.Replica] = true
	}
	for tenant, rs := range replicaOf {
		if len(rs) != 1 {
			t.Errorf("%s was served by %d replicas, want 1 (the one holding it)", tenant, len(rs))
		}
	}

	// Without the header the deployment answers 400 naming it.
	resp, err := client.Post(f.URL()+"/tenants/", "application/json", strings.NewReader(`{"text":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(strings.ToLower(string(body)), "serve_multiplexed_model_id") {
		t.Errorf("POST without a model id = %s %s, want 400 naming the header", resp.Status, body)
	}
}
