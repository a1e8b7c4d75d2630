package voicesearch

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/golden"
	"github.com/jetserve/jetserve/pkg/graph"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

var update = flag.Bool("update", false, "rewrite config.yaml from the declarations")

func registry(t *testing.T) *serve.Registry {
	t.Helper()
	reg := serve.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := reg.DeclareApp(Apps()...); err != nil {
		t.Fatal(err)
	}
	return reg
}

func local(t *testing.T, reg *serve.Registry, name string) (*serve.Local, config.Application) {
	t.Helper()
	app, err := reg.BuildApp(name)
	if err != nil {
		t.Fatal(err)
	}
	l, err := serve.NewLocal(context.Background(), reg, app, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatalf("NewLocal(%s) = %v", name, err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l, app
}

func speech(t *testing.T, text string) []byte {
	t.Helper()
	b, err := json.Marshal(NewAudio(Synthesize(text)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// heard decodes the speech of an answer back to text.
func heard(t *testing.T, a Audio) string {
	t.Helper()
	s, err := a.Samples()
	if err != nil {
		t.Fatal(err)
	}
	text, err := Recognize(s)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// TestVoiceSearchInProcess runs app "voice" (the flow in Go, through
// handles) in a plain go test: a question is answered from the facts, a
// query is searched and its result spoken.
func TestVoiceSearchInProcess(t *testing.T) {
	l, _ := local(t, registry(t), "voice")
	ctx := context.Background()

	resp, err := l.Ingress().Call(ctx, &serve.Request{Body: speech(t, "what is jetstream")})
	if err != nil {
		t.Fatal(err)
	}
	var r Reply
	if err := resp.Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.Transcript != "what is jetstream" || r.Answer == nil || !strings.HasPrefix(r.Answer.Text, "JetStream is the persistence layer of NATS") || r.Results != nil {
		t.Fatalf("question = %+v, want the JetStream fact", r)
	}

	resp, err = l.Ingress().Call(ctx, &serve.Request{Body: speech(t, "concurrency patterns with goroutines")})
	if err != nil {
		t.Fatal(err)
	}
	r = Reply{}
	if err := resp.Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.Answer != nil || r.Results == nil || r.Speech == nil || len(r.Results.Results) == 0 || r.Results.Results[0].Title != "Concurrency patterns in Go" {
		t.Fatalf("search = %+v, want Concurrency patterns in Go first", r)
	}
	if got := heard(t, *r.Speech); got != "top result concurrency patterns in go" {
		t.Errorf("spoken answer = %q, want the top result said", got)
	}

	// /speak makes a question's waveform.
	resp, err = l.Ingress().Call(ctx, &serve.Request{Path: "/speak", Body: []byte(`{"text":"What is DTMF?"}`)})
	if err != nil {
		t.Fatal(err)
	}
	var a Audio
	if err := resp.Decode(&a); err != nil || heard(t, a) != "what is dtmf?" {
		t.Errorf("speak = %v, want the waveform of \"what is dtmf?\"", err)
	}
}

// TestVoiceGraphInProcess runs app "voice-graph": the same flow as a
// declarative switch graph, over the in-process backend.
func TestVoiceGraphInProcess(t *testing.T) {
	l, app := local(t, registry(t), "voice-graph")
	g, err := graph.Compile(app)
	if err != nil {
		t.Fatal(err)
	}
	run := func(body []byte) (map[string]any, error) {
		resp, err := g.Serve(context.Background(), &serve.Request{Method: "POST", Path: "/", Body: body, RequestID: "t"}, graph.Options{Caller: l})
		if err != nil {
			return nil, err
		}
		var m map[string]any
		return m, json.Unmarshal(resp.Body, &m)
	}
	m, err := run(speech(t, "what is the capital of france"))
	if err != nil {
		t.Fatal(err)
	}
	if m["text"] != "The capital of France is Paris." || m["speech"] != nil {
		t.Fatalf("question = %v, want the answer, not spoken", m)
	}
	m, err = run(speech(t, "how do i cook pasta"))
	if err != nil {
		t.Fatal(err)
	}
	results, _ := m["results"].([]any)
	if len(results) == 0 || results[0].(map[string]any)["title"] != "Cooking pasta" || m["speech"] == nil {
		t.Fatalf("search = %v, want Cooking pasta first, spoken", m)
	}
	raw, _ := json.Marshal(m["speech"])
	var a Audio
	if err := json.Unmarshal(raw, &a); err != nil || heard(t, a) != "top result cooking pasta" {
		t.Errorf("spoken = %v, want \"top result cooking pasta\"", err)
	}

	// Silence fails the first step: the request fails, the step named.
	_, err = run(mustJSON(t, NewAudio(make([]int16, SampleRate/2))))
	se, ok := graph.AsStepError(err)
	if !ok || se.Step != "root/SpeechToText" || se.Err.Status != http.StatusUnprocessableEntity || !strings.Contains(se.Err.Msg, "no speech") {
		t.Errorf("silence = %v, want 422 from root/SpeechToText saying no speech", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConfigYAMLIsBuilt: config.yaml is `jetserve build voice voice-graph`.
func TestConfigYAMLIsBuilt(t *testing.T) {
	built, err := registry(t).BuildYAML("voice", "voice-graph")
	if err != nil {
		t.Fatal(err)
	}
	file := golden.Check(t, "config.yaml", built, *update, "go test -run TestConfigYAMLIsBuilt -update")
	cfg, err := config.Parse(file)
	if err != nil {
		t.Fatalf("Parse(config.yaml) = %v", err)
	}
	g := cfg.Applications[1].Graph
	if n, ok := g.Node("route"); !ok || n.Steps[0].Condition != WhatCondition {
		t.Errorf("voice-graph's switch = %+v, want the condition %s", n, WhatCondition)
	}
}
