package batching_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/jetserve/jetserve/examples/batching"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func local(t *testing.T, userConfig string) *serve.Local {
	t.Helper()
	reg := serve.NewRegistry()
	if err := batching.Register(reg); err != nil {
		t.Fatal(err)
	}
	app := config.Application{Name: "b", RoutePrefix: "/b", Ingress: "Scorer", Deployments: []config.Deployment{
		{Name: "Scorer", Handler: batching.HandlerScorer, UserConfig: json.RawMessage(userConfig)}}}
	l, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return l
}

// score sends n concurrent requests and returns the largest batch size
// any answer reports.
func score(t *testing.T, l *serve.Local, n int) int {
	t.Helper()
	var (
		mu      sync.Mutex
		largest int
		wg      sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			out, err := serve.CallJSON[batching.Output](context.Background(), l.Ingress(), "", batching.Input{Text: "a wonderful fast phone"})
			if err != nil {
				t.Errorf("call: %v", err)
				return
			}
			if out.Label != "positive" && out.Label != "negative" || out.Score <= 0 || out.Score >= 1 {
				t.Errorf("answer = %+v, want a probability and a label", out)
			}
			mu.Lock()
			largest = max(largest, out.BatchSize)
			mu.Unlock()
		})
	}
	wg.Wait()
	return largest
}

func TestScorerBatchesConcurrentRequests(t *testing.T) {
	// A 20 ms call cost: concurrent requests pile up behind the device and
	// are served together.
	l := local(t, `{"call_cost":"20ms","batch":{"max_batch_size":8,"batch_wait_timeout":"5ms"}}`)
	if got := score(t, l, 16); got < 2 || got > 8 {
		t.Errorf("largest batch = %d, want 2..8 (batched, at most max_batch_size)", got)
	}
	unbatched := local(t, `{"batched":false,"call_cost":"1ms"}`)
	if got := score(t, unbatched, 8); got != 1 {
		t.Errorf("largest batch unbatched = %d, want 1", got)
	}
}

func TestScorerRejectsBadUserConfig(t *testing.T) {
	for _, tc := range []struct{ cfg, want string }{
		{`{"call_cost":"soon"}`, "call_cost"},
		{`{"batch":{"max_batch_size":0}}`, "max_batch_size"},
		{`{"batch":{"max_batch_sise":4}}`, "max_batch_sise"},
	} {
		reg := serve.NewRegistry()
		if err := batching.Register(reg); err != nil {
			t.Fatal(err)
		}
		app := config.Application{Name: "b", RoutePrefix: "/b", Ingress: "Scorer", Deployments: []config.Deployment{
			{Name: "Scorer", Handler: batching.HandlerScorer, UserConfig: json.RawMessage(tc.cfg)}}}
		_, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop()) // constructs every deployment
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("user_config %s: NewLocal = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

func TestScorerReconfiguresInPlace(t *testing.T) {
	reg := serve.NewRegistry()
	if err := batching.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctor, _ := reg.Lookup(batching.HandlerScorer)
	h, err := ctor(context.Background(), serve.Init{UserConfig: json.RawMessage(`{"call_cost":"0s"}`)})
	if err != nil {
		t.Fatal(err)
	}
	s := h.(*batching.Scorer)
	defer s.Close(context.Background()) //nolint:errcheck
	if err := s.Reconfigure(context.Background(), json.RawMessage(`{"batch":{"max_batch_size":-1}}`)); err == nil || !strings.Contains(err.Error(), "max_batch_size") {
		t.Errorf("Reconfigure(bad) = %v, want an error naming max_batch_size", err)
	}
	if err := s.Reconfigure(context.Background(), json.RawMessage(`{"batched":false}`)); err != nil {
		t.Fatal(err)
	}
	resp, err := s.ServeRequest(context.Background(), &serve.Request{Body: []byte(`{"text":"ok"}`)})
	if err != nil || !strings.Contains(string(resp.Body), `"batch_size":1`) {
		t.Errorf("after Reconfigure(batched false): %s, %v", resp.Body, err)
	}
}
