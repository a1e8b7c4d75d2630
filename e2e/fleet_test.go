package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// Bounds on how long the fleet may take; generous for 2 shared cores.
const (
	deployTimeout   = 60 * time.Second
	recoverTimeout  = 45 * time.Second
	takeoverTimeout = 20 * time.Second
	requestTimeout  = 10 * time.Second
)

// TestDeployExample deploys the example application through the admin
// API and calls it through the ingress.
func TestDeployExample(t *testing.T) {
	f := startFleet(t, fleet.Options{Autoscaler: true})
	raw, cfg := readExample(t)
	f.Deploy(raw)
	for _, app := range cfg.Applications {
		a := f.WaitApp(deployTimeout, app.Name, replicas(app), nil)
		if a.RoutePrefix != app.RoutePrefix {
			t.Errorf("status of %s: route_prefix = %q, want %q", app.Name, a.RoutePrefix, app.RoutePrefix)
		}
	}

	t.Run("ingress healthz", func(t *testing.T) {
		r := fleet.MustDo(t, http.MethodGet, f.URL()+"/-/healthz", nil, nil)
		if r.Status != http.StatusOK {
			t.Errorf("GET /-/healthz = %v, want 200", r)
		}
	})
	t.Run("applied config", func(t *testing.T) {
		r := fleet.MustDo(t, http.MethodGet, f.AdminURL()+"/api/serve/config", nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET /api/serve/config = %v, want 200", r)
		}
		for _, app := range cfg.Applications {
			if !strings.Contains(string(r.Body), `"`+app.Name+`"`) {
				t.Errorf("GET /api/serve/config = %s, want it to name app %q", r.Body, app.Name)
			}
		}
	})
	for _, c := range exampleCalls {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := f.MustCall(c.method, c.path, c.body)
			for _, want := range c.want {
				if !strings.Contains(string(r.Body), want) {
					t.Errorf("%s %s %s = %v, want it to contain %s", c.method, c.path, c.body, r, want)
				}
			}
		})
	}
}

// TestUpdateUserConfigInPlace changes only the example pipeline's
// user_config: the replicas stay (same ids, same version) and answer with
// the new configuration.
func TestUpdateUserConfigInPlace(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerPipeline)
	_, cfg := readExample(t)
	app, ok := cfg.App(exampleApp)
	if !ok {
		t.Fatalf("%s has no app %q", exampleConfig, exampleApp)
	}
	withVersion := func(version string) []byte {
		a := app
		a.Deployments = slices.Clone(app.Deployments)
		for i := range a.Deployments {
			if a.Deployments[i].Name == examplePipeline {
				a.Deployments[i].UserConfig = json.RawMessage(fmt.Sprintf(`{"summary_sentences":1,"keywords":3,"version":%q}`, version))
			}
		}
		return serveConfig(t, a)
	}
	describe := examplePrefix + "/"

	f.Deploy(withVersion("e2e-before"))
	before := f.WaitApp(deployTimeout, exampleApp, replicas(app), nil)
	if err := answersWith(f, http.MethodGet, describe, nil, `"version":"e2e-before"`, 8); err != nil {
		t.Fatal(err)
	}

	f.Deploy(withVersion("e2e-after"))
	took := f.Eventually(deployTimeout, "every replica answers with the new user_config", func() error {
		return answersWith(f, http.MethodGet, describe, nil, `"version":"e2e-after"`, 10)
	})
	t.Logf("new user_config visible after %v", took)
	if err := answersWith(f, http.MethodPost, examplePrefix+"/analyze", []byte(`{"text":"`+review+`"}`), `"config_version":"e2e-after"`, 2); err != nil {
		t.Error(err)
	}
	after := f.WaitApp(deployTimeout, exampleApp, replicas(app), nil)
	if got, want := fleet.ReplicaIDs(after), fleet.ReplicaIDs(before); !slices.Equal(got, want) {
		t.Errorf("replica ids after a user_config change = %v, want the same as before %v (reconfigure in place, no restart)", got, want)
	}
	if got, want := after.Deployments[examplePipeline].Version, before.Deployments[examplePipeline].Version; got != want {
		t.Errorf("%s version after a user_config change = %q, want unchanged %q", examplePipeline, got, want)
	}
}

// answersWith sends n requests and reports the first that is not a 200
// containing want.
func answersWith(f *fleet.Fleet, method, path string, body []byte, want string, n int) error {
	for range n {
		r, err := f.Call(method, path, body)
		if err != nil {
			return err
		}
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), want) {
			return errorf("%s %s = %v, want 200 containing %q", method, path, r, want)
		}
	}
	return nil
}

// echoes sends n echo calls to path and reports the first that fails.
func echoes(f *fleet.Fleet, path string, n int) error {
	return answersWith(f, http.MethodPost, path, echoBody, string(echoBody), n)
}

// TestRollingUpdateUnderTraffic changes a restart-requiring option while
// four clients call continuously: every replica is replaced and no request
// fails.
func TestRollingUpdateUnderTraffic(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerEcho)
	d := deployment{app: "roll", handler: handlerEcho, replicas: 2, cpu: 0.5, maxOngoing: 8}
	f.Deploy(serveConfig(t, d.application()))
	before := f.WaitApp(deployTimeout, "roll", 2, nil)
	oldIDs := fleet.ReplicaIDs(before)
	oldVersion := before.Deployments["roll"].Version

	tr := fleet.StartTraffic(t, 4, http.MethodPost, f.URL()+"/roll/", echoBody, requestTimeout)
	tr.WaitOK(t, 50, requestTimeout)

	d.cpu = 0.4
	f.Deploy(serveConfig(t, d.application()))
	took := time.Now()
	after := f.WaitApp(deployTimeout, "roll", 2, func(a protocol.AppStatus) error {
		for _, id := range fleet.ReplicaIDs(a) {
			if slices.Contains(oldIDs, id) {
				return errorf("old replica %s still there", id)
			}
		}
		if v := a.Deployments["roll"].Version; v == oldVersion {
			return errorf("deployment version still %s", v)
		}
		return nil
	})
	t.Logf("rolled %v → %v in %v", oldIDs, fleet.ReplicaIDs(after), time.Since(took).Round(time.Millisecond))
	tr.WaitOK(t, 50, requestTimeout)
	res := tr.Stop()
	t.Logf("traffic: %v", res)
	if res.Failed != 0 {
		t.Errorf("requests failed during the rolling update: %v; first failures:\n%s", res, strings.Join(res.Failures, "\n"))
	}
}

// noRebalance keeps replicas where they are when a worker joins, for the
// tests that need every replica on one worker of two (onOneWorker).
func noRebalance() map[string]string { return map[string]string{"JETSERVE_REBALANCE": "false"} }

// onOneWorker deploys d on the fleet's only worker, then starts a second
// worker and returns the first: every replica of d is on it (the fleet
// must not rebalance: fleet.Options.SchedulerEnv noRebalance).
func onOneWorker(t *testing.T, f *fleet.Fleet, d deployment) *fleet.Service {
	t.Helper()
	if len(f.Workers) != 1 {
		t.Fatalf("onOneWorker: fleet has %d workers, want 1", len(f.Workers))
	}
	f.Deploy(serveConfig(t, d.application()))
	f.WaitApp(deployTimeout, d.app, d.replicas, nil)
	f.AddWorker(true)
	f.WaitWorkers(2)
	a := f.WaitApp(deployTimeout, d.app, d.replicas, nil)
	if by := fleet.ReplicasByWorker(a); by[f.Workers[0].ID] != d.replicas {
		t.Fatalf("replicas moved when a worker joined: %s", fleet.Describe(a))
	}
	return f.Workers[0]
}

// TestWorkerKilled kills -9 the worker that runs every replica: the
// scheduler replaces them on the other worker and calls succeed again
// within recoverTimeout.
func TestWorkerKilled(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 1, SchedulerEnv: noRebalance()})
	f.RequireHandlers(handlerEcho)
	d := deployment{app: "echo", handler: handlerEcho, replicas: 2, maxOngoing: 8}
	victim := onOneWorker(t, f, d)
	f.MustCall(http.MethodPost, "/echo/", echoBody)

	t.Logf("killing %s, which runs both replicas", victim.ID)
	f.Kill(victim.Proc)
	killed := time.Now()

	f.Eventually(recoverTimeout, "calls succeed again", func() error {
		return echoes(f, "/echo/", 1)
	})
	firstOK := time.Since(killed)
	f.WaitApp(recoverTimeout, "echo", 2, func(a protocol.AppStatus) error {
		if n := fleet.ReplicasByWorker(a)[victim.ID]; n > 0 {
			return errorf("%d replicas still on the killed %s", n, victim.ID)
		}
		return nil
	})
	replaced := time.Since(killed)
	f.WaitWorkers(1)
	if err := echoes(f, "/echo/", 20); err != nil {
		t.Errorf("after recovery: %v", err)
	}
	t.Logf("after kill -9: first success in %v, 2 replicas running elsewhere in %v", firstOK.Round(time.Millisecond), replaced.Round(time.Millisecond))
}

// TestSchedulerFailover kills -9 the leading scheduler of two while
// clients call: no request fails, the other one takes the lead within
// takeoverTimeout and reconciles a new config.
func TestSchedulerFailover(t *testing.T) {
	f := startFleet(t, fleet.Options{Schedulers: 2, Routers: 2})
	f.RequireHandlers(handlerEcho)
	d := deployment{app: "echo", handler: handlerEcho, replicas: 2, maxOngoing: 8}
	f.Deploy(serveConfig(t, d.application()))
	f.WaitApp(deployTimeout, "echo", 2, nil)

	st := f.MustStatus()
	leader := f.Scheduler(st.Leader)
	if leader == nil {
		t.Fatalf("status leader = %q, want the id of one of our schedulers (scheduler-1, scheduler-2)", st.Leader)
	}
	other := f.Live(f.Schedulers)[0]
	if other == leader {
		other = f.Live(f.Schedulers)[1]
	}

	tr := fleet.StartTraffic(t, 4, http.MethodPost, f.URL()+"/echo/", echoBody, requestTimeout)
	tr.WaitOK(t, 50, requestTimeout)
	t.Logf("killing leader %s", leader.ID)
	f.Kill(leader.Proc)
	took := f.Eventually(takeoverTimeout, other.ID+" leads", func() error {
		st, err := fleet.StatusAt(other.AdminURL())
		if err != nil {
			return err
		}
		if f.Scheduler(st.Leader) != other {
			return errorf("leader is %q", st.Leader)
		}
		return nil
	})
	t.Logf("%s took the lead %v after the kill", other.ID, took.Round(time.Millisecond))
	tr.WaitOK(t, 50, requestTimeout)

	d.replicas = 3
	f.DeployTo(other.AdminURL(), serveConfig(t, d.application()))
	f.WaitApp(deployTimeout, "echo", 3, nil)
	tr.WaitOK(t, 50, requestTimeout)
	res := tr.Stop()
	t.Logf("traffic: %v", res)
	if res.Failed != 0 {
		t.Errorf("requests failed while the scheduler failed over: %v; first failures:\n%s", res, strings.Join(res.Failures, "\n"))
	}
}

// TestWorkerSIGTERMDrains stops the worker running every replica with
// SIGTERM while clients call: it exits 0 within its graceful shutdown
// timeout and no request fails (its replicas drain while new ones start on
// the other worker).
func TestWorkerSIGTERMDrains(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 1, SchedulerEnv: noRebalance()})
	f.RequireHandlers(handlerEcho)
	d := deployment{app: "echo", handler: handlerEcho, replicas: 2, maxOngoing: 8}
	victim := onOneWorker(t, f, d)

	tr := fleet.StartTraffic(t, 4, http.MethodPost, f.URL()+"/echo/", echoBody, requestTimeout)
	tr.WaitOK(t, 50, requestTimeout)
	start := time.Now()
	if err := f.Term(victim.Proc, 30*time.Second); err != nil {
		t.Errorf("%s after SIGTERM: %v, want exit status 0", victim.ID, err)
	}
	t.Logf("%s exited %v after SIGTERM", victim.ID, time.Since(start).Round(time.Millisecond))
	f.WaitApp(recoverTimeout, "echo", 2, func(a protocol.AppStatus) error {
		if n := fleet.ReplicasByWorker(a)[victim.ID]; n > 0 {
			return errorf("%d replicas still on the stopped %s", n, victim.ID)
		}
		return nil
	})
	tr.WaitOK(t, 50, requestTimeout)
	res := tr.Stop()
	t.Logf("traffic: %v", res)
	if res.Failed != 0 {
		t.Errorf("requests failed while a worker drained: %v; first failures:\n%s", res, strings.Join(res.Failures, "\n"))
	}
}

// errorResponse is the admin API's and the ingress's error body.
type errorResponse struct {
	Error   string       `json:"error"`
	Message string       `json:"message"`
	Fields  []fieldError `json:"fields"`
}

type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// TestBadInputs checks that every kind of bad request gets its own clear
// answer and changes nothing.
func TestBadInputs(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerEcho)
	_, example := readExample(t)
	// The example apps (text, echo) and a one-slot app for queue full.
	slow := deployment{app: "slow", handler: handlerSlow, replicas: 1, maxOngoing: 1, maxQueued: 1}
	apps := append(slices.Clone(example.Applications), slow.application())
	f.Deploy(serveConfig(t, apps...))
	for _, app := range apps {
		f.WaitApp(deployTimeout, app.Name, replicas(app), nil)
	}
	before := fleet.MustDo(t, http.MethodGet, f.AdminURL()+"/api/serve/config", nil, nil)

	t.Run("invalid config", func(t *testing.T) {
		bad := []byte(`applications:
- name: echo
  route_prefix: /echo
  ingress: echo
  deployments:
  - name: echo
    handler: ` + handlerEcho + `
    max_ongoing_requests: -3
`)
		r := fleet.MustDo(t, http.MethodPut, f.AdminURL()+"/api/serve/applications", bad, http.Header{"Content-Type": {"application/yaml"}})
		if r.Status != http.StatusBadRequest {
			t.Fatalf("PUT invalid config = %v, want 400", r)
		}
		var e errorResponse
		if err := json.Unmarshal(r.Body, &e); err != nil {
			t.Fatalf("PUT invalid config: body %s: %v", r.Body, err)
		}
		const field = "applications[0].deployments[0].max_ongoing_requests"
		if e.Error != string(protocol.ErrInvalidConfig) || !slices.ContainsFunc(e.Fields, func(fe fieldError) bool { return fe.Field == field }) {
			t.Errorf("PUT invalid config = %s, want error %q naming field %q", r.Body, protocol.ErrInvalidConfig, field)
		}
		after := fleet.MustDo(t, http.MethodGet, f.AdminURL()+"/api/serve/config", nil, nil)
		if string(after.Body) != string(before.Body) {
			t.Errorf("applied config changed by a rejected PUT:\nbefore %s\nafter  %s", before.Body, after.Body)
		}
		if err := echoes(f, exampleEchoPrefix+"/", 5); err != nil {
			t.Errorf("previous app after a rejected PUT: %v", err)
		}
	})
	t.Run("malformed JSON to the admin API", func(t *testing.T) {
		r := fleet.MustDo(t, http.MethodPut, f.AdminURL()+"/api/serve/applications", []byte(`{"applications": [`), http.Header{"Content-Type": {"application/json"}})
		if r.Status != http.StatusBadRequest {
			t.Errorf("PUT malformed JSON = %v, want 400", r)
		}
	})
	t.Run("unknown route", func(t *testing.T) {
		r := fleet.MustDo(t, http.MethodPost, f.URL()+"/no-such-app-e2e/x", echoBody, nil)
		if r.Status != http.StatusNotFound {
			t.Errorf("POST /no-such-app-e2e/x = %v, want 404", r)
		}
	})
	t.Run("oversized body", func(t *testing.T) {
		r, err := fleet.PostSized(f.URL()+exampleEchoPrefix+"/", oversized)
		if err != nil {
			t.Fatalf("POST %d bytes: %v", oversized, err)
		}
		if r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("POST %d bytes = %v, want 413", oversized, r)
		}
	})
	t.Run("unknown method on the app", func(t *testing.T) {
		r := fleet.MustDo(t, http.MethodPost, f.URL()+exampleUnknownMethod, []byte(`{}`), http.Header{"Content-Type": {"application/json"}})
		if r.Status != http.StatusNotFound {
			t.Errorf("POST %s = %v, want 404", exampleUnknownMethod, r)
		}
	})
	t.Run("queue full", func(t *testing.T) {
		testQueueFull(t, f)
	})
	t.Run("previous apps still serve", func(t *testing.T) {
		if err := echoes(f, exampleEchoPrefix+"/", 5); err != nil {
			t.Error(err)
		}
	})
}

// oversized is a body larger than the ingress accepts: over its default
// max_body_bytes (64 MiB; smaller bodies over the NATS max_payload go
// through the bodies object store).
const oversized = 65 << 20

func testQueueFull(t *testing.T, f *fleet.Fleet) {
	// 1 replica × max_ongoing 1 + max_queued 1 at the one router: of 6
	// concurrent slow calls at most 2 are taken at once, the rest refused.
	const n = 6
	type answer struct {
		r   fleet.Response
		err error
	}
	answers := make(chan answer, n)
	for range n {
		go func() {
			r, err := f.Call(http.MethodPost, "/slow/"+slowQuery, echoBody)
			answers <- answer{r, err}
		}()
	}
	var ok, full int
	for range n {
		a := <-answers
		switch {
		case a.err != nil:
			t.Errorf("slow call: %v", a.err)
		case a.r.Status == http.StatusOK:
			ok++
		case a.r.Status == http.StatusServiceUnavailable:
			full++
			if a.r.Header.Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After: %v", a.r)
			}
			if !strings.Contains(string(a.r.Body), string(protocol.ErrQueueFull)) {
				t.Errorf("503 = %v, want code %q in the body", a.r, protocol.ErrQueueFull)
			}
		default:
			t.Errorf("slow call = %v, want 200 or 503", a.r)
		}
	}
	if ok == 0 || full == 0 {
		t.Errorf("%d concurrent slow calls: %d ok, %d queue full; want some of each", n, ok, full)
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
