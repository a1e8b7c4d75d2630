package textpipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/jetserve/jetserve/examples"
	"github.com/jetserve/jetserve/examples/textpipeline"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/servetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// localApp runs the example config's "text" application in-process: the
// same deployments the fleet runs, with no NATS.
func localApp(t *testing.T) *serve.Local {
	t.Helper()
	b, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(b)
	if err != nil {
		t.Fatalf("Parse(examples/config.yaml) = %v", err)
	}
	app, ok := cfg.App("text")
	if !ok {
		t.Fatal("config has no app text")
	}
	reg := serve.NewRegistry()
	if err := examples.Register(reg); err != nil {
		t.Fatal(err)
	}
	return servetest.Local(t, reg, app)
}

const review = "The new phone is wonderful. The screen is bright and sharp, and the battery lasts for days. " +
	"Setup took a minute. I love how fast the camera is, and the speakers are excellent."

func TestAnalyzeChoosesModelsByLanguage(t *testing.T) {
	l := localApp(t)
	tests := []struct {
		name, text, lang string
		sentiment        string // "" = the model must not run
	}{
		{"english runs sentiment", review, "en", "positive"},
		{"english negative", "This was a terrible purchase. The battery died after a day and support was useless and rude.", "en", "negative"},
		{"french skips sentiment", "Le nouveau téléphone est merveilleux. L'écran est lumineux et la batterie dure plusieurs jours.", "fr", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]string{"text": tc.text})
			resp, err := l.Ingress().Call(context.Background(), &serve.Request{Path: "/analyze", Body: body})
			if err != nil {
				t.Fatalf("analyze = %v", err)
			}
			var a textpipeline.Analysis
			if err := resp.Decode(&a); err != nil {
				t.Fatal(err)
			}
			if a.Language.Language != tc.lang {
				t.Errorf("language = %q, want %q", a.Language.Language, tc.lang)
			}
			if tc.sentiment == "" && a.Sentiment != nil {
				t.Errorf("sentiment ran for %s, want it skipped", tc.lang)
			}
			if tc.sentiment != "" && (a.Sentiment == nil || a.Sentiment.Label != tc.sentiment) {
				t.Errorf("sentiment = %+v, want %s", a.Sentiment, tc.sentiment)
			}
			if len(a.Keywords) == 0 || len(a.Summary) == 0 || len(a.Summary) > 2 {
				t.Errorf("keywords = %v, summary = %v; want keywords and 1-2 summary sentences", a.Keywords, a.Summary)
			}
			if a.ConfigVersion != "v1" {
				t.Errorf("config_version = %q, want v1 from user_config", a.ConfigVersion)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	l := localApp(t)
	tests := []struct {
		name, path, body string
		status           int
	}{
		{"malformed json", "/analyze", "{not json", 400},
		{"missing text", "/analyze", `{"n": 3}`, 400},
		{"unknown method", "/translate", `{"text":"hi"}`, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Ingress().Call(context.Background(), &serve.Request{Path: tc.path, Body: []byte(tc.body)})
			var se *serve.Error
			if !errors.As(err, &se) || se.Status != tc.status {
				t.Fatalf("Call(%s %s) = %v, want status %d", tc.path, tc.body, err, tc.status)
			}
		})
	}
}

func TestReconfigureInPlace(t *testing.T) {
	h, err := textpipeline.NewPipeline(context.Background(), serve.Init{App: "text", Caller: nil})
	if err != nil {
		t.Fatal(err)
	}
	r := h.(serve.Reconfigurer)
	if err := r.Reconfigure(context.Background(), json.RawMessage(`{"summary_sentences": 0}`)); err == nil {
		t.Fatal("Reconfigure(summary_sentences 0) = nil, want an error")
	}
	if err := r.Reconfigure(context.Background(), json.RawMessage(`{"summary_sentences": 1, "keywords": 2, "version": "v2"}`)); err != nil {
		t.Fatalf("Reconfigure() = %v", err)
	}
	resp, err := h.ServeRequest(context.Background(), &serve.Request{Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	var d struct{ Config textpipeline.PipelineConfig }
	if err := resp.Decode(&d); err != nil || d.Config.Version != "v2" || d.Config.SummarySentences != 1 {
		t.Fatalf("describe after Reconfigure = %+v, %v; want version v2, 1 sentence", d.Config, err)
	}
}
