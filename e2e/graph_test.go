package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/protocol"
	"golang.org/x/sync/errgroup"
)

// canaryConfig is app canary: two versions of a model (diag.Echo, whose
// X-Replica header names the deployment that answered) behind a splitter
// with weights v1/v2; without v1, a splitter sending everything to v2.
func canaryConfig(v1, v2 int, withV1 bool) []byte {
	deps := `[{name: ModelV2, handler: diag.Echo, num_replicas: 2, max_ongoing_requests: 64, resources: {cpu: 0.1}}]`
	steps := fmt.Sprintf(`[{name: v2, deployment: ModelV2, weight: %d}]`, v2)
	if withV1 {
		deps = `[{name: ModelV1, handler: diag.Echo, num_replicas: 2, max_ongoing_requests: 64, resources: {cpu: 0.1}},
    {name: ModelV2, handler: diag.Echo, num_replicas: 2, max_ongoing_requests: 64, resources: {cpu: 0.1}}]`
		steps = fmt.Sprintf(`[{name: v1, deployment: ModelV1, weight: %d}, {name: v2, deployment: ModelV2, weight: %d}]`, v1, v2)
	}
	return []byte(`applications:
- name: canary
  route_prefix: /canary
  deployments: ` + deps + `
  graph:
    nodes:
    - {name: root, type: splitter, steps: ` + steps + `}
`)
}

// versionTraffic sends POSTs from n goroutines until stopped, counting the
// answers by the deployment that gave them and keeping every failure.
type versionTraffic struct {
	cancel context.CancelFunc
	g      *errgroup.Group

	mu       sync.Mutex
	byModel  map[string]int // guarded by mu
	failures []string       // guarded by mu
}

func startVersionTraffic(t *testing.T, n int, url string) *versionTraffic {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g, ctx := errgroup.WithContext(ctx)
	vt := &versionTraffic{cancel: cancel, g: g, byModel: map[string]int{}}
	for range n {
		g.Go(func() error {
			for ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, requestTimeout)
				r, err := fleet.Do(rctx, http.MethodPost, url, []byte(`{"x":1}`), nil)
				rcancel()
				if ctx.Err() != nil {
					return nil
				}
				vt.mu.Lock()
				switch rep := r.Header.Get("X-Replica"); {
				case err != nil:
					vt.failures = append(vt.failures, err.Error())
				case r.Status != http.StatusOK:
					vt.failures = append(vt.failures, r.String())
				case strings.Contains(rep, "-ModelV1-"):
					vt.byModel["ModelV1"]++
				case strings.Contains(rep, "-ModelV2-"):
					vt.byModel["ModelV2"]++
				default:
					vt.failures = append(vt.failures, "answered by "+rep)
				}
				vt.mu.Unlock()
			}
			return nil
		})
	}
	t.Cleanup(vt.stop)
	return vt
}

func (vt *versionTraffic) stop() { vt.cancel(); _ = vt.g.Wait() }

func (vt *versionTraffic) counts() (map[string]int, []string) {
	vt.mu.Lock()
	defer vt.mu.Unlock()
	m := map[string]int{}
	for k, v := range vt.byModel {
		m[k] = v
	}
	return m, append([]string(nil), vt.failures...)
}

// split returns the live split of app's root splitter in the status.
func split(f *fleet.Fleet, app string) (protocol.SplitterStatus, error) {
	st, err := f.Status()
	if err != nil {
		return protocol.SplitterStatus{}, err
	}
	a := st.Applications[app]
	if a.Graph == nil || len(a.Graph.Splitters) == 0 {
		return protocol.SplitterStatus{}, fmt.Errorf("no graph split in the status of %s", app)
	}
	return a.Graph.Splitters[0], nil
}

// TestCanarySplitUnderTraffic is a canary of a new model version: two
// deployments behind a 95/5 splitter under steady traffic, then 0/100,
// then the old version removed — with no request failing, and the status
// showing the live split the clients saw.
func TestCanarySplitUnderTraffic(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers("diag.Echo")
	f.Deploy(canaryConfig(95, 5, true))
	f.WaitApp(deployTimeout, "canary", 4, nil)

	tr := startVersionTraffic(t, 4, f.URL()+"/canary/predict")
	f.Eventually(2*time.Minute, "2000 answers at 95/5", func() error {
		c, fails := tr.counts()
		if len(fails) > 0 {
			t.Fatalf("requests failed at 95/5: %d, first: %s", len(fails), fails[0])
		}
		if n := c["ModelV1"] + c["ModelV2"]; n < 2000 {
			return fmt.Errorf("%d answers so far", n)
		}
		return nil
	})
	seen, _ := tr.counts()
	total := seen["ModelV1"] + seen["ModelV2"]
	share := 100 * float64(seen["ModelV2"]) / float64(total)
	t.Logf("95/5: %v (%.1f%% to v2)", seen, share)
	// 5 % of ≥ 2000 has a standard deviation of ≤ 0.49 points: ±3 points is > 6σ.
	if share < 2 || share > 8 {
		t.Errorf("ModelV2 answered %.1f%% of %d requests, want 5 ± 3", share, total)
	}
	// The status's live split is the ingress's count of the same choices
	// (the requests of the last minute, reported every second).
	f.Eventually(30*time.Second, "the status's split to match the clients'", func() error {
		s, err := split(f, "canary")
		if err != nil {
			return err
		}
		if s.Branches[0].Weight != 95 || s.Branches[1].Weight != 5 || s.Requests < uint64(total)/2 {
			return fmt.Errorf("split %+v, want weights 95/5 and at least %d requests", s, total/2)
		}
		if d := s.Branches[1].Share - share; d < -1.5 || d > 1.5 {
			return fmt.Errorf("status says %.1f%% to v2 of %d requests, clients saw %.1f%%", s.Branches[1].Share, s.Requests, share)
		}
		return nil
	})

	// All traffic to the new version: a config change of the graph only.
	f.Deploy(canaryConfig(0, 100, true))
	before, _ := tr.counts()
	f.Eventually(30*time.Second, "only ModelV2 answering (500 in a row)", func() error {
		c, fails := tr.counts()
		if len(fails) > 0 {
			t.Fatalf("requests failed while moving to 0/100: %d, first: %s", len(fails), fails[0])
		}
		if c["ModelV1"] != before["ModelV1"] {
			before = c
			return fmt.Errorf("ModelV1 still answers (%d)", c["ModelV1"])
		}
		if c["ModelV2"]-before["ModelV2"] < 500 {
			return fmt.Errorf("%d ModelV2 answers since ModelV1's last", c["ModelV2"]-before["ModelV2"])
		}
		return nil
	})
	s, err := split(f, "canary")
	if err != nil || s.Branches[0].Weight != 0 || s.Branches[1].Weight != 100 {
		t.Errorf("split after 0/100 = %+v, %v; want weights 0/100", s, err)
	}

	// The old version goes: its replicas drain, no request fails.
	f.Deploy(canaryConfig(0, 100, false))
	f.WaitApp(deployTimeout, "canary", 2, nil)
	mark, _ := tr.counts()
	f.Eventually(30*time.Second, "200 more answers after ModelV1 was removed", func() error {
		c, _ := tr.counts()
		if c["ModelV2"]-mark["ModelV2"] < 200 {
			return fmt.Errorf("%d so far", c["ModelV2"]-mark["ModelV2"])
		}
		return nil
	})
	tr.stop()
	final, fails := tr.counts()
	t.Logf("whole run: %v, %d failed", final, len(fails))
	if len(fails) > 0 {
		t.Errorf("%d requests failed, want none; first: %v", len(fails), fails[:min(5, len(fails))])
	}
}

// TestBadGraphsAreRefused: invalid graphs are answered 400 with the field
// named, and nothing changes; a failed step fails the request with its
// status and the step named.
func TestBadGraphsAreRefused(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers("diag.Echo")
	good := canaryConfig(50, 50, true)
	f.Deploy(good)
	f.WaitApp(deployTimeout, "canary", 4, nil)
	for _, tc := range []struct{ name, from, to, field, msg string }{
		{"weights not summing to 100", "weight: 50}]", "weight: 40}]", "applications[0].graph.nodes[0].steps", "must sum to 100, they sum to 90"},
		{"unknown node", "deployment: ModelV2, weight", "node: nowhere, weight", "applications[0].graph.nodes[0].steps[1].node", `"nowhere"`},
		{"unknown deployment", "deployment: ModelV2, weight", "deployment: ModelV3, weight", "applications[0].graph.nodes[0].steps[1].deployment", `"ModelV3"`},
		{"cycle", "deployment: ModelV2, weight", "node: root, weight", "applications[0].graph.nodes[0]", "cycle: root → root"},
		{"uses an absent deployment", "max_ongoing_requests: 64, resources: {cpu: 0.1}},", "max_ongoing_requests: 64, resources: {cpu: 0.1}, uses: [ModelV9]},", "applications[0].deployments[0].uses[0]", `deployment ModelV1 uses "ModelV9"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(string(good), tc.from, tc.to, 1)
			if bad == string(good) {
				t.Fatalf("the test's replacement of %q changed nothing", tc.from)
			}
			r := fleet.MustDo(t, http.MethodPut, f.AdminURL()+"/api/serve/applications", []byte(bad), nil)
			var body struct {
				Error  string `json:"error"`
				Fields []struct{ Field, Message string }
			}
			if err := json.Unmarshal(r.Body, &body); err != nil || r.Status != 400 || body.Error != "invalid_config" {
				t.Fatalf("PUT = %v (%v), want 400 invalid_config", r, err)
			}
			for _, fe := range body.Fields {
				if fe.Field == tc.field && strings.Contains(fe.Message, tc.msg) {
					return
				}
			}
			t.Errorf("PUT fields = %+v, want %s: …%s…", body.Fields, tc.field, tc.msg)
		})
	}
	// Nothing changed: the graph still splits 50/50.
	if s, err := split(f, "canary"); err != nil || s.Branches[0].Weight != 50 {
		t.Errorf("split after the refused PUTs = %+v, %v; want 50/50 still", s, err)
	}
	// A failed step (Echo fails with ?fail=1) fails the request: its
	// status, the step named — not a 200.
	r := fleet.MustDo(t, http.MethodPost, f.URL()+"/canary/predict?fail=1", []byte("x"), nil)
	var body struct{ Error, Message, Step string }
	if err := json.Unmarshal(r.Body, &body); err != nil || r.Status != 500 || body.Error != "handler_error" ||
		(body.Step != "root/v1" && body.Step != "root/v2") {
		t.Errorf("POST ?fail=1 = %v, want 500 handler_error naming root/v1 or root/v2", r)
	}
}

// TestVoiceSearchInTheFleet deploys examples/voicesearch/config.yaml: the
// flow in Go (handles across the worker's replicas) and as a switch graph
// run by the ingress answer a spoken question and speak a search result.
func TestVoiceSearchInTheFleet(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers("voice.VoiceSearch", "voice.SpeechToText", "voice.QA", "voice.Search", "voice.TextToSpeech")
	b, err := os.ReadFile(filepath.FromSlash("../examples/voicesearch/config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f.Deploy(b)
	f.WaitApp(deployTimeout, "voice", 5, nil)
	f.WaitApp(deployTimeout, "voice-graph", 4, nil)

	speak := func(text string) []byte {
		r := f.MustCall(http.MethodPost, "/voice/speak", []byte(`{"text":"`+text+`"}`))
		return r.Body
	}
	question := speak("what is the capital of france")
	search := speak("how do i cook pasta")

	// The Go flow.
	var reply struct {
		Transcript string
		Answer     *struct{ Text string }
		Results    *struct{ Results []struct{ Title string } }
		Speech     *struct {
			SampleRate int `json:"sample_rate"`
		}
	}
	r := f.MustCall(http.MethodPost, "/voice/", question)
	if err := json.Unmarshal(r.Body, &reply); err != nil || reply.Transcript != "what is the capital of france" || reply.Answer == nil ||
		reply.Answer.Text != "The capital of France is Paris." {
		t.Errorf("POST /voice/ (question) = %v, want the answer about Paris", r)
	}
	reply.Answer, reply.Results = nil, nil
	r = f.MustCall(http.MethodPost, "/voice/", search)
	if err := json.Unmarshal(r.Body, &reply); err != nil || reply.Results == nil || len(reply.Results.Results) == 0 ||
		reply.Results.Results[0].Title != "Cooking pasta" || reply.Speech == nil || reply.Speech.SampleRate != 8000 {
		t.Errorf("POST /voice/ (search) = %v, want Cooking pasta, spoken", r)
	}

	// The graph.
	var g map[string]any
	r = f.MustCall(http.MethodPost, "/voice-graph/", question)
	if err := json.Unmarshal(r.Body, &g); err != nil || g["text"] != "The capital of France is Paris." {
		t.Errorf("POST /voice-graph/ (question) = %v, want the answer about Paris", r)
	}
	g = nil
	r = f.MustCall(http.MethodPost, "/voice-graph/", search)
	if err := json.Unmarshal(r.Body, &g); err != nil || g["speech"] == nil || !strings.Contains(string(r.Body), `"title":"Cooking pasta"`) {
		t.Errorf("POST /voice-graph/ (search) = %v, want Cooking pasta, spoken", r)
	}
	// Silence fails the graph's first step: 422, the step named.
	silence := `{"sample_rate":8000,"pcm16":"` + strings.Repeat("AAAA", 2000) + `"}`
	r = fleet.MustDo(t, http.MethodPost, f.URL()+"/voice-graph/", []byte(silence), nil)
	if r.Status != 422 || !strings.Contains(string(r.Body), `"step":"root/SpeechToText"`) {
		t.Errorf("POST /voice-graph/ (silence) = %v, want 422 naming root/SpeechToText", r)
	}
}

// TestBuildEditDeploy is the REP's build loop through the real binaries:
// `jetserve build` writes an application's config from the code, an
// operator edits it (echo's replicas; text's user_config and replicas)
// and deploys it — no rebuild —
// and the fleet runs it as edited; the voice app's edges (uses) are
// checked at deploy.
func TestBuildEditDeploy(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	cli := bins.Path(t, fleet.CLI)
	f.RequireHandlers(handlerEcho)
	out, errOut, err := fleet.RunCmd(t, 30*time.Second, cli, "build", "echo")
	if err != nil || !strings.Contains(out, "num_replicas: 1") {
		t.Fatalf("jetserve build echo = %v\n%s\n%s", err, out, errOut)
	}
	file := filepath.Join(t.TempDir(), "echo.yaml")
	edited := strings.Replace(out, "num_replicas: 1", "num_replicas: 3", 1)
	if err := os.WriteFile(file, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := fleet.RunCmd(t, 30*time.Second, cli, "deploy", file, "--admin", f.AdminURL()); err != nil {
		t.Fatalf("jetserve deploy = %v: %s", err, errOut)
	}
	f.WaitApp(deployTimeout, "echo", 3, nil)
	if r := f.MustCall(http.MethodPost, "/echo/", []byte("hi")); string(r.Body) != "hi" {
		t.Errorf("POST /echo/ = %v, want hi", r)
	}

	// The text pipeline's user_config and replicas edited: the replicas
	// run the edited user_config.
	out, errOut, err = fleet.RunCmd(t, 30*time.Second, cli, "build", "text")
	if err != nil {
		t.Fatalf("jetserve build text = %v: %s", err, errOut)
	}
	edited = strings.NewReplacer("version: v1}", "version: edited-by-ops}", "num_replicas: 2", "num_replicas: 1").Replace(out)
	if strings.Count(edited, "edited-by-ops") != 1 || strings.Contains(edited, "num_replicas: 2") {
		t.Fatalf("jetserve build text changed: the edits do not apply to\n%s", out)
	}
	if err := os.WriteFile(file, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := fleet.RunCmd(t, 30*time.Second, cli, "deploy", file, "--admin", f.AdminURL()); err != nil {
		t.Fatalf("jetserve deploy (text, edited) = %v: %s", err, errOut)
	}
	f.WaitApp(deployTimeout, "text", 6, nil)
	r := f.MustCall(http.MethodPost, "/text/analyze", []byte(`{"text":"I love this product."}`))
	var analysis struct {
		ConfigVersion string `json:"config_version"`
	}
	if err := json.Unmarshal(r.Body, &analysis); err != nil || analysis.ConfigVersion != "edited-by-ops" {
		t.Errorf("POST /text/analyze = %v, want config_version edited-by-ops (the operator's user_config)", r)
	}

	// An edge to a deployment absent from the application is refused,
	// naming both.
	out, _, err = fleet.RunCmd(t, 30*time.Second, cli, "build", "voice")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(out, "uses: [SpeechToText, QA, Search, TextToSpeech]", "uses: [SpeechToText, QA, Search, TextToSpeak]", 1)
	if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = fleet.RunCmd(t, 30*time.Second, cli, "deploy", file, "--admin", f.AdminURL())
	if err == nil || !strings.Contains(errOut, "applications[0].deployments[0].uses[3]") || !strings.Contains(errOut, "VoiceSearch uses") ||
		!strings.Contains(errOut, "TextToSpeak") {
		t.Errorf("jetserve deploy (an edge to TextToSpeak) = %v: %s; want a 400 naming VoiceSearch and TextToSpeak", err, errOut)
	}
}
