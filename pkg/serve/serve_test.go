package serve_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

type upper struct{}

func (upper) ServeRequest(_ context.Context, req *serve.Request) (*serve.Response, error) {
	var in struct{ Text string }
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	return serve.JSON(map[string]string{"text": strings.ToUpper(in.Text)})
}

// front chains to upper and fans out to two handles.
func newFront(_ context.Context, init serve.Init) (serve.Handler, error) {
	up := init.Handle("Upper")
	return serve.Methods{
		"chain": func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
			out, err := serve.CallJSON[map[string]string](ctx, up, "", map[string]string{"text": string(req.Body)})
			if err != nil {
				return nil, err
			}
			return serve.JSON(out)
		},
		"fan": func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
			outs, err := serve.FanOut[map[string]string](ctx, []*serve.Handle{up, up}, "", map[string]string{"text": string(req.Body)})
			if err != nil {
				return nil, err
			}
			return serve.JSON(outs)
		},
	}, nil
}

func TestLocalRunsAnApplicationWithoutNATS(t *testing.T) {
	reg := serve.NewRegistry()
	if err := reg.Register("front", newFront); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register("upper", func(context.Context, serve.Init) (serve.Handler, error) { return upper{}, nil }); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register("upper", func(context.Context, serve.Init) (serve.Handler, error) { return upper{}, nil }); err == nil {
		t.Fatal("Register(duplicate) = nil, want an error")
	}
	app := config.Application{Name: "a", RoutePrefix: "/a", Ingress: "Front", Deployments: []config.Deployment{
		{Name: "Front", Handler: "front"}, {Name: "Upper", Handler: "upper"}}}
	local, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		name, path, body string
		status           int
		want             string
		code             protocol.ErrorCode
	}{
		{"chain", "/chain", "hi", 200, `{"text":"HI"}`, ""},
		{"fan-out", "/fan", "yo", 200, `[{"text":"YO"},{"text":"YO"}]`, ""},
		{"unknown method", "/nope", "", 404, "", protocol.ErrMethodNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := local.Ingress().Call(ctx, &serve.Request{Path: tc.path, Body: []byte(tc.body)})
			if tc.code != "" {
				var se *serve.Error
				if !errors.As(err, &se) || se.Status != tc.status || se.Code != tc.code {
					t.Fatalf("Call(%s) = %v, want %d %s", tc.path, err, tc.status, tc.code)
				}
				return
			}
			if err != nil || resp.Status != tc.status || string(resp.Body) != tc.want {
				t.Fatalf("Call(%s) = %v %v, want %d %s", tc.path, resp, err, tc.status, tc.want)
			}
		})
	}
	if _, err := serve.NewHandle(local, "a", "Upper").Call(ctx, &serve.Request{Body: []byte("{bad")}); err == nil {
		t.Fatal("Call(malformed JSON) = nil error, want 400")
	} else if se := serve.AsError(err); se.Status != http.StatusBadRequest {
		t.Fatalf("Call(malformed JSON) = %v, want 400", err)
	}
}

func TestEffectiveAsyncMergesFieldByField(t *testing.T) {
	two, five := 2, 5
	sdk := []config.AsyncMethod{{Name: "train", MaxRunning: 4, Priority: &two, IdempotencyKey: "job_id", MaxAttempts: 5}}
	over := []config.AsyncMethod{{Name: "train", MaxRunning: 1}, {Name: "extra", Priority: &five}}
	got := serve.EffectiveAsync(sdk, over)
	if len(got) != 2 {
		t.Fatalf("EffectiveAsync() = %d methods, want 2", len(got))
	}
	tr := got[0]
	if tr.MaxRunning != 1 || *tr.Priority != 2 || tr.IdempotencyKey != "job_id" || tr.MaxAttempts != 5 || tr.MaxQueued != config.DefaultMaxQueued {
		t.Fatalf("train = %+v, want max_running from config, the rest from the SDK, then platform defaults", tr)
	}
	if got[1].Name != "extra" || *got[1].Priority != 5 || got[1].IdempotencyKey != config.DefaultIdempotencyKey {
		t.Fatalf("extra = %+v, want config-only method with defaults", got[1])
	}
}

func TestInitEnvironSetsCUDAVisibleDevices(t *testing.T) {
	tests := []struct {
		gpus []int
		want string
	}{{nil, "CUDA_VISIBLE_DEVICES="}, {[]int{0}, "CUDA_VISIBLE_DEVICES=0"}, {[]int{2, 0, 3}, "CUDA_VISIBLE_DEVICES=2,0,3"}}
	for _, tc := range tests {
		if got := (serve.Init{GPUs: tc.gpus}).Environ(); len(got) != 1 || got[0] != tc.want {
			t.Errorf("Init{GPUs: %v}.Environ() = %q, want [%q]", tc.gpus, got, tc.want)
		}
	}
}
