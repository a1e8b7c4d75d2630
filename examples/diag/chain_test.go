package diag_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/examples/diag"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/servetest"
	"github.com/rs/zerolog"
)

func chainApp(n int, extra ...config.Deployment) config.Application {
	app := config.Application{Name: "bench", RoutePrefix: "/bench", Ingress: "C1"}
	for i := 1; i <= n; i++ {
		uc := `{}`
		if i < n {
			uc = `{"next":"C` + string(rune('0'+i+1)) + `"}`
		}
		app.Deployments = append(app.Deployments, config.Deployment{Name: "C" + string(rune('0'+i)), Handler: diag.HandlerChain, UserConfig: json.RawMessage(uc)})
	}
	app.Deployments = append(app.Deployments, extra...)
	return app
}

func local(t *testing.T, app config.Application) *serve.Local {
	t.Helper()
	reg := serve.NewRegistry()
	if err := diag.Register(reg); err != nil {
		t.Fatal(err)
	}
	return servetest.Local(t, reg, app)
}

// TestChainPassesRequestsThrough: a chain of 3 answers with the last
// one's echo, every replica named in X-Chain, and streams through it.
func TestChainPassesRequestsThrough(t *testing.T) {
	l := local(t, chainApp(3))
	ctx := context.Background()
	resp, err := l.Ingress().Call(ctx, &serve.Request{Body: []byte("hi"), Header: http.Header{"Content-Type": {"text/plain"}}})
	if err != nil || string(resp.Body) != "hi" || resp.Header.Get("X-Chain") != "C1-local,C2-local,C3-local" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("Call = %v, %v; want hi with X-Chain C1-local,C2-local,C3-local", resp, err)
	}
	var got serve.StreamRecorder
	if err := l.Ingress().Stream(ctx, &serve.Request{Query: url.Values{"chunks": {"2"}}}, &got); err != nil {
		t.Fatalf("Stream = %v", err)
	}
	if want := []string{"chunk 0\n", "chunk 1\n"}; !slices.Equal(got.Strings(), want) {
		t.Fatalf("Stream = %q, want %q", got.Strings(), want)
	}
	// ?fail=1 fails at the end of the chain; the error comes back whole.
	_, err = l.Ingress().Call(ctx, &serve.Request{Query: url.Values{"fail": {"1"}}})
	if se := serve.AsError(err); se.Status != http.StatusInternalServerError || !strings.Contains(se.Msg, "failed on request") {
		t.Fatalf("Call(fail=1) = %v, want the end's 500", err)
	}
}

// TestChainCancelReachesTheEnd: a caller that leaves a call held at the
// end of the chain (delay_ms) gets its answer at once, not after the delay.
func TestChainCancelReachesTheEnd(t *testing.T) {
	l := local(t, chainApp(3))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := l.Ingress().Call(ctx, &serve.Request{Query: url.Values{"delay_ms": {"60000"}}})
	if serve.AsError(err).Code != protocol.ErrTimeout || time.Since(start) > 10*time.Second {
		t.Fatalf("Call(delay 60s, deadline 100ms) = %v after %v, want a timeout at once", err, time.Since(start))
	}
}

// TestFanOutCallsEveryTarget: a 4-way fan-out answers every target's
// body in order; a target naming no deployment fails NewLocal.
func TestFanOutCallsEveryTarget(t *testing.T) {
	app := chainApp(1, config.Deployment{Name: "Fan", Handler: diag.HandlerFanOut,
		UserConfig: json.RawMessage(`{"targets":["C1","C1","C1","C1"]}`)})
	l := local(t, app)
	resp, err := l.Handle("Fan").Call(context.Background(), &serve.Request{Body: []byte("x")})
	if err != nil || string(resp.Body) != `["x","x","x","x"]` {
		t.Fatalf("Call(Fan) = %v, %v; want four x", resp, err)
	}
	reg := serve.NewRegistry()
	if err := diag.Register(reg); err != nil {
		t.Fatal(err)
	}
	bad := chainApp(1, config.Deployment{Name: "Fan", Handler: diag.HandlerFanOut, UserConfig: json.RawMessage(`{"targets":["C1","Bee"]}`)})
	if _, err := serve.NewLocal(context.Background(), reg, bad, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), `"Bee"`) {
		t.Fatalf("NewLocal(fan-out to Bee) = %v, want an error naming Bee", err)
	}
	empty := chainApp(1, config.Deployment{Name: "Fan", Handler: diag.HandlerFanOut})
	if _, err := serve.NewLocal(context.Background(), reg, empty, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "targets") {
		t.Fatalf("NewLocal(fan-out to nothing) = %v, want an error naming targets", err)
	}
}
