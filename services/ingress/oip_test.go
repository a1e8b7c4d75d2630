package ingress

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/oip"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// specModel is the model of the protocol specification's inference
// example: inputs input0 (UINT32 [2,2]) and input1 (BOOL [3]), output
// output0 (FP32 [3,2]) with output0[i][j] = (i+1) + 0.1·j·input0[0][0] where
// input1[i] is true, else 0 — so the example's inputs give the example's
// answer [1.0, 1.1, 2.0, 2.1, 3.0, 3.1]. It has version "1".
type specModel struct{}

func (specModel) ModelMetadata(_ context.Context, model string) (*serve.ModelMetadata, error) {
	return &serve.ModelMetadata{Name: model, Versions: []string{"1"},
		Inputs: []serve.TensorMetadata{{Name: "input0", Datatype: oip.UINT32, Shape: []int64{2, 2}},
			{Name: "input1", Datatype: oip.BOOL, Shape: []int64{3}}},
		Outputs: []serve.TensorMetadata{{Name: "output0", Datatype: oip.FP32, Shape: []int64{3, 2}}}}, nil
}

func (specModel) Infer(_ context.Context, req *serve.InferRequest) (*serve.InferResponse, error) {
	in0, err := req.Input("input0").Uint32s()
	if err != nil {
		return nil, err
	}
	in1, err := req.Input("input1").Bools()
	if err != nil {
		return nil, err
	}
	out := make([]float32, 6)
	for i := range 3 {
		for j := range 2 {
			if in1[i] {
				out[2*i+j] = float32(i+1) + 0.1*float32(j)*float32(in0[0])
			}
		}
	}
	t, err := oip.NewTensor("output0", []int64{3, 2}, out)
	if err != nil {
		return nil, err
	}
	return &serve.InferResponse{Outputs: []*serve.Tensor{t}}, nil
}

// oipFleet is an ingress (embedded router) on a real embedded JetStream
// with the application "models" (route /models, ingress Front) whose
// deployments serve OIP models:
//   - Spec (Go, model "mymodel"): a replica that is a NATS subscriber on
//     its call subject serving serve.OIP(specModel{}) — the SDK adapter
//     behind the real wire encoding;
//   - Raw (runtime process, model "raw"): a replica that records the
//     request it got and answers a fixed OIP response, as a child OIP
//     server passed the request through would.
type oipFleet struct {
	base string
	raw  chan *serve.Request
}

func startOIPFleet(t *testing.T) *oipFleet {
	t.Helper()
	tf := natstest.NewFleet(t)
	ns, nc, names, b := tf.NS, tf.NC, tf.Names, tf.Buckets
	natstest.PutConfigText(t, b, `applications:
- name: models
  route_prefix: /models
  ingress: Front
  deployments:
  - {name: Front, handler: front}
  - {name: Spec, handler: spec, protocol: oip, oip_models: [mymodel]}
  - {name: Raw, runtime: process, command: [oip-server], protocol: oip, oip_models: [raw]}
`)
	f := &oipFleet{raw: make(chan *serve.Request, 16)}
	replica := func(dep, id string, h serve.Handler) {
		_, err := nc.Subscribe(names.ReplicaSubject(id)+"."+protocol.EndpointCall, func(m *nats.Msg) {
			req := wire.DecodeRequest(m)
			var r *nats.Msg
			if resp, err := h.ServeRequest(context.Background(), req); err != nil {
				r = wire.EncodeError(err)
			} else {
				r = wire.EncodeResponse(resp)
			}
			r.Subject = m.Reply
			_ = nc.PublishMsg(r)
		})
		if err != nil {
			t.Fatal(err)
		}
		natstest.PutReplica(t, b, protocol.ReplicaInfo{ID: id, App: "models", Deployment: dep, WorkerID: "w1", State: protocol.ReplicaRunning,
			MaxOngoingRequests: 8, Subject: names.ReplicaSubject(id), Heartbeat: time.Now()})
	}
	replica("Spec", "spec-1", serve.OIP(specModel{}))
	replica("Raw", "raw-1", serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
		f.raw <- req
		return &serve.Response{Status: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: []byte(`{"model_name":"raw","outputs":[{"name":"o","shape":[1],"datatype":"INT8","data":[7]}]}`)}, nil
	}))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	f.base = runIngress(t, ns, DefaultConfig())
	// The embedded router learns replicas from the bucket: wait until the
	// models are reachable.
	deadline := time.Now().Add(15 * time.Second)
	for _, m := range []string{"mymodel", "raw"} {
		for {
			resp, err := http.Get(f.base + "/v2/models/" + m + "/ready")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("model %s never became ready: %v", m, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for len(f.raw) > 0 {
		<-f.raw // the ready probes
	}
	return f
}

// TestOIPPassThroughToProcessModel: a process deployment speaking OIP gets
// exactly the client's request — the OIP path, the body byte for byte, the
// model named in serve_multiplexed_model_id — and its answer comes back
// as it was.
func TestOIPPassThroughToProcessModel(t *testing.T) {
	f := startOIPFleet(t)
	body := []byte(`{ "id" : "7", "inputs" : [ {"name":"in","shape":[2],"datatype":"INT8","data":[1,-2]} ] }`)
	resp, err := http.Post(f.base+"/v2/models/raw/versions/2/infer?debug=1", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(got), `"data":[7]`) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("POST raw infer = %d %v %s, want the child's answer", resp.StatusCode, resp.Header, got)
	}
	var req *serve.Request
	select {
	case req = <-f.raw:
	case <-time.After(10 * time.Second):
		t.Fatal("the process model's replica got no request")
	}
	if req.Method != "POST" || req.Path != "/v2/models/raw/versions/2/infer" || !bytes.Equal(req.Body, body) || req.Query.Get("debug") != "1" {
		t.Errorf("replica got %s %s ?%v %q; want POST /v2/models/raw/versions/2/infer ?debug=1 with the body untouched", req.Method, req.Path, req.Query, req.Body)
	}
	if v := req.Header.Get("serve_multiplexed_model_id"); v != "raw" {
		t.Errorf("replica got serve_multiplexed_model_id %q, want raw", v)
	}

	// A malformed tensor never reaches it.
	resp, err = http.Post(f.base+"/v2/models/raw/infer", "application/json",
		strings.NewReader(`{"inputs":[{"name":"in","shape":[3],"datatype":"INT8","data":[1,-2]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(got), `input \"in\": shape [3] × INT8 needs 3 elements, data has 2`) {
		t.Errorf("POST malformed = %d %s, want 400 naming the input", resp.StatusCode, got)
	}
	select {
	case r := <-f.raw:
		t.Errorf("the replica got a malformed request: %q", r.Body)
	default:
	}
}
