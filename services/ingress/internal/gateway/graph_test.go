package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/graph/graphtest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/servetest"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// graphHandler serves application g (route /g), whose graph runs over the
// in-process backend (serve.Local, the real deployments below): root is a
// sequence upper → a 50/50 split of the echo deployments V1 and V2.
// Deployment Busy answers 503 no_replicas, Bad 422.
func graphHandler(t *testing.T, root string) (*Handler, *sync.Map) {
	t.Helper()
	reg := graphtest.Registry(t, map[string]serve.Constructor{
		"upper": graphtest.Upper,
		"version": func(_ context.Context, in serve.Init) (serve.Handler, error) {
			return streamer{name: in.Deployment}, nil
		},
		"busy": func(context.Context, serve.Init) (serve.Handler, error) {
			return serve.HandlerFunc(func(context.Context, *serve.Request) (*serve.Response, error) {
				return nil, &serve.Error{Status: 503, Code: protocol.ErrNoReplicas, Msg: "no replica of Busy can run"}
			}), nil
		},
		"bad": func(context.Context, serve.Init) (serve.Handler, error) {
			return serve.HandlerFunc(func(context.Context, *serve.Request) (*serve.Response, error) {
				return nil, serve.Errorf(http.StatusUnprocessableEntity, "field x is wrong")
			}), nil
		},
	})
	sc, err := config.Parse([]byte(`applications:
- name: g
  route_prefix: /g
  deployments: [{name: Upper, handler: upper}, {name: V1, handler: version}, {name: V2, handler: version},
                {name: Busy, handler: busy}, {name: Bad, handler: bad}]
  graph:
    nodes:
      - ` + root + `
      - {name: split, type: splitter, steps: [{name: v1, deployment: V1, weight: 50}, {name: v2, deployment: V2, weight: 50}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	l := servetest.Local(t, reg, sc.Applications[0])
	tab, err := routes.FromConfig(sc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var splits sync.Map // "app/node/step" → *int
	var mu sync.Mutex
	return New(Options{Caller: l, Routes: func() *routes.Table { return tab }, Healthy: func() error { return nil },
		MaxBodyBytes: 1 << 20, Metrics: m, Log: zerolog.Nop(), OnSplit: func(app, node, step string) {
			mu.Lock()
			defer mu.Unlock()
			v, _ := splits.LoadOrStore(app+"/"+node+"/"+step, new(int))
			*v.(*int)++
		}}), &splits
}

// streamer answers "<name>:" and the body, streamed as two chunks.
type streamer struct{ name string }

func (s streamer) ServeRequest(_ context.Context, req *serve.Request) (*serve.Response, error) {
	return &serve.Response{Status: 200, Header: http.Header{"X-Version": {s.name}}, Body: append([]byte(s.name+":"), req.Body...)}, nil
}

func (s streamer) ServeStream(_ context.Context, req *serve.Request, w serve.StreamWriter) error {
	if err := w.WriteHead(200, http.Header{"X-Version": {s.name}}); err != nil {
		return err
	}
	if err := w.Write([]byte(s.name + ":")); err != nil {
		return err
	}
	return w.Write(req.Body)
}

func TestGraphServesTheApplication(t *testing.T) {
	h, splits := graphHandler(t, `{name: root, type: sequence, steps: [{deployment: Upper}, {node: split, data: $response}]}`)
	got := map[string]int{}
	for range 200 {
		rr := do(h, "POST", "/g/predict", "abc")
		if rr.Code != 200 {
			t.Fatalf("POST /g/predict = %d %s, want 200", rr.Code, rr.Body)
		}
		v := rr.Header().Get("X-Version")
		if body := rr.Body.String(); body != v+":ABC" {
			t.Fatalf("body = %q, want %q", body, v+":ABC")
		}
		got[v]++
	}
	if got["V1"] == 0 || got["V2"] == 0 || got["V1"]+got["V2"] != 200 {
		t.Errorf("answers by version = %v, want both of 200", got)
	}
	for v, n := range got {
		c, ok := splits.Load("g/split/" + strings.ToLower(v))
		if !ok || *c.(*int) != n {
			t.Errorf("split count of %s = %v, want %d", v, c, n)
		}
	}

	// Streamed: the answering step's chunks.
	r := httptest.NewRequest("POST", "/g/predict?stream=1", strings.NewReader("xy"))
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, r)
	if b, _ := io.ReadAll(rr.Body); rr.Code != 200 || !strings.HasSuffix(string(b), ":XY") {
		t.Errorf("streamed POST = %d %q, want 200 …:XY", rr.Code, b)
	}
}

func TestGraphStepFailureIsTheRequestsFailure(t *testing.T) {
	for _, tc := range []struct {
		name, root, step string
		status           int
		code             protocol.ErrorCode
		retryAfter       bool
	}{
		{"a handler's 422", `{name: root, type: sequence, steps: [{deployment: Upper}, {name: check, deployment: Bad, data: $response}, {node: split}]}`,
			"root/check", 422, protocol.ErrBadRequest, false},
		{"no replicas: 503 + Retry-After", `{name: root, type: ensemble, steps: [{deployment: Upper}, {deployment: Busy}], combiner: {deployment: V1}}`,
			"root/Busy", 503, protocol.ErrNoReplicas, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := graphHandler(t, tc.root)
			for _, path := range []string{"/g/x", "/g/x?stream=1"} {
				rr := do(h, "POST", path, "abc")
				var body struct {
					Error     protocol.ErrorCode `json:"error"`
					Message   string             `json:"message"`
					Step      string             `json:"step"`
					RequestID string             `json:"request_id"`
				}
				if err := json.Unmarshal(rr.Body.Bytes(), &body); err != nil {
					t.Fatalf("POST %s = %d %s: %v", path, rr.Code, rr.Body, err)
				}
				if rr.Code != tc.status || body.Error != tc.code || body.Step != tc.step || body.Message == "" || body.RequestID == "" {
					t.Errorf("POST %s = %d %+v, want %d %s naming step %s", path, rr.Code, body, tc.status, tc.code, tc.step)
				}
				if got := rr.Header().Get("Retry-After") != ""; got != tc.retryAfter {
					t.Errorf("POST %s: Retry-After set = %v, want %v", path, got, tc.retryAfter)
				}
			}
		})
	}
}
