package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
)

// Composition through the real binaries: the handles of diag.Chain and
// diag.FanOut (examples/diag) route from the worker's own process.

const (
	handlerChain  = "diag.Chain"
	handlerFanOut = "diag.FanOut"
)

// zoned returns a fleet option giving worker i the label zone=zones[i].
func zoned(zones ...string) []map[string]string {
	env := make([]map[string]string, len(zones))
	for i, z := range zones {
		env[i] = map[string]string{"JETSERVE_LABELS": "zone=" + z}
	}
	return env
}

// composeDeployment is one replica of handler on the worker labelled zone.
func composeDeployment(name, handler, zone string, userConfig any) config.Deployment {
	one, cpu := 1, 0.1
	uc, err := json.Marshal(userConfig)
	if err != nil {
		panic(err)
	}
	return config.Deployment{
		Name: name, Handler: handler, NumReplicas: &one, MaxOngoingRequests: 64,
		Resources:               config.Resources{CPU: &cpu, Labels: map[string]string{"zone": zone}},
		UserConfig:              uc,
		HealthCheckPeriod:       config.Duration(time.Second),
		HealthCheckTimeout:      config.Duration(5 * time.Second),
		GracefulShutdownTimeout: config.Duration(5 * time.Second),
	}
}

// chainOf is app name: n diag.Chain deployments C1 → C2 → … → Cn (C1 the
// ingress, Cn the end), Ci on the worker labelled zones[(i-1) % len].
func chainOf(name string, n int, zones ...string) config.Application {
	app := config.Application{Name: name, RoutePrefix: "/" + name, Ingress: "C1"}
	for i := 1; i <= n; i++ {
		next := ""
		if i < n {
			next = fmt.Sprintf("C%d", i+1)
		}
		app.Deployments = append(app.Deployments,
			composeDeployment(fmt.Sprintf("C%d", i), handlerChain, zones[(i-1)%len(zones)], map[string]string{"next": next}))
	}
	return app
}

// fanOutOf is app name: F (zone from) sends every request to 4 diag.Chain
// ends T1..T4 (zone to) in parallel.
func fanOutOf(name, from, to string) config.Application {
	app := config.Application{Name: name, RoutePrefix: "/" + name, Ingress: "F"}
	var targets []string
	for i := 1; i <= 4; i++ {
		t := fmt.Sprintf("T%d", i)
		targets = append(targets, t)
		app.Deployments = append(app.Deployments, composeDeployment(t, handlerChain, to, map[string]string{}))
	}
	app.Deployments = append(app.Deployments, composeDeployment("F", handlerFanOut, from, map[string][]string{"targets": targets}))
	return app
}

// routerRequests sums jetserve_num_router_requests_total for app on s's
// /metrics, per deployment.
func routerRequests(t testing.TB, s *fleet.Service, app string) map[string]float64 {
	t.Helper()
	r := fleet.MustDo(t, http.MethodGet, s.OpsURL()+"/metrics", nil, nil)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(r.Body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "jetserve_num_router_requests_total{") || !strings.Contains(line, `application="`+app+`"`) {
			continue
		}
		_, dep, _ := strings.Cut(line, `deployment="`)
		dep, _, _ = strings.Cut(dep, `"`)
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[dep] += v
	}
	return out
}

// TestHandlesRouteFromTheWorker: a chain across two workers answers
// through every hop, and every handle call was routed by the calling
// worker's embedded router — the router service saw none of them; a
// 4-way fan-out answers with all four. A chain with no selectors and its
// uses edges declared is placed on one worker by the scheduler
// (colocate), so its handle calls stay in-process.
func TestHandlesRouteFromTheWorker(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 2, WorkerEnv: zoned("a", "b")})
	f.RequireHandlers(handlerChain, handlerFanOut)
	// near's replicas ask 1 CPU each: by free CPU alone they would
	// alternate between the workers.
	near := unpinnedChainOf("near", 3)
	for i := range near.Deployments {
		one := 1.0
		near.Deployments[i].Resources.CPU = &one
	}
	f.Deploy(serveConfig(t, chainOf("chain", 4, "a", "b"), fanOutOf("fan", "a", "b"), near))
	f.WaitApp(deployTimeout, "chain", 4, nil)
	f.WaitApp(deployTimeout, "fan", 5, nil)
	f.WaitApp(deployTimeout, "near", 3, nil)
	if where := placementOf(t, f.MustStatus(), "near", 3); !strings.HasSuffix(where, "; 0 of 2 hops cross workers") {
		t.Errorf("placement of the unpinned chain: %s; want it on one worker (uses edges, colocate)", where)
	}
	if r := f.MustCall(http.MethodPost, "/near/", echoBody); string(r.Body) != string(echoBody) || len(strings.Split(r.Header.Get("X-Chain"), ",")) != 3 {
		t.Errorf("POST /near/ = %s (X-Chain %q), want the echo through 3 replicas", r, r.Header.Get("X-Chain"))
	}

	r := f.MustCall(http.MethodPost, "/chain/", echoBody)
	if string(r.Body) != string(echoBody) {
		t.Fatalf("POST /chain/ = %s, want the echo of %s", r, echoBody)
	}
	hops := strings.Split(r.Header.Get("X-Chain"), ",")
	if len(hops) != 4 {
		t.Fatalf("X-Chain = %q, want the 4 replicas of the chain", r.Header.Get("X-Chain"))
	}
	r = f.MustCall(http.MethodPost, "/fan/", echoBody)
	var bodies []string
	if err := json.Unmarshal(r.Body, &bodies); err != nil || len(bodies) != 4 || bodies[3] != string(echoBody) {
		t.Fatalf("POST /fan/ = %s, want four echoes", r)
	}

	for dep, n := range routerRequests(t, f.Routers[0], "chain") {
		if n != 0 {
			t.Errorf("the router service routed %v requests to chain/%s, want none (handles route from the worker)", n, dep)
		}
	}
	// C1 (worker a) called C2; C3 (worker a) called C4; C2 (worker b) C3.
	wa, wb := routerRequests(t, f.Workers[0], "chain"), routerRequests(t, f.Workers[1], "chain")
	if wa["C2"] < 1 || wa["C4"] < 1 || wb["C3"] < 1 {
		t.Errorf("worker routers' requests: zone a %v, zone b %v; want C2 and C4 routed by a, C3 by b", wa, wb)
	}
}

// TestStreamThroughAChain: ?stream=1 through a chain of three across two
// workers arrives chunk by chunk (the first long before the last).
func TestStreamThroughAChain(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 2, WorkerEnv: zoned("a", "b")})
	f.RequireHandlers(handlerChain)
	f.Deploy(serveConfig(t, chainOf("schain", 3, "a", "b")))
	f.WaitApp(deployTimeout, "schain", 3, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL()+"/schain/?stream=1&chunks=3&delay_ms=400", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := fleet.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream through the chain = %d %s", resp.StatusCode, b)
	}
	rd := bufio.NewReader(resp.Body)
	var got []string
	var at []time.Time
	for {
		line, err := rd.ReadString('\n')
		if line != "" {
			got, at = append(got, line), append(at, time.Now())
		}
		if err != nil {
			break
		}
	}
	if want := []string{"chunk 0\n", "chunk 1\n", "chunk 2\n"}; strings.Join(got, "") != strings.Join(want, "") {
		t.Fatalf("streamed chunks = %q, want %q", got, want)
	}
	if spread := at[len(at)-1].Sub(at[0]); spread < 500*time.Millisecond {
		t.Errorf("first and last chunk arrived %v apart, want ≥ 500ms (two 400ms delays): the stream was not streamed", spread)
	}
}

// TestClientLeavingStopsTheChain: a client that hangs up on a request
// held at the end of a chain across two workers (delay_ms=60000) makes
// every replica of the chain drop it within seconds, not a minute: the
// cancel travels down every hop.
func TestClientLeavingStopsTheChain(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 2, WorkerEnv: zoned("a", "b")})
	f.RequireHandlers(handlerChain)
	f.Deploy(serveConfig(t, chainOf("leave", 3, "a", "b")))
	f.WaitApp(deployTimeout, "leave", 3, nil)

	nc, err := nats.Connect(f.NATS.URL, nats.Name("e2e-loads"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	names, _ := protocol.NewNames("")
	ongoing := map[string]int{}
	loads := make(chan *nats.Msg, 256)
	// The routers' reports: sent on every change of a replica's load (at
	// most every 20 ms), so the time measured is the hops', not the
	// full reports' cadence (250 ms).
	sub, err := nc.ChanSubscribe(names.RouteLoadWildcard(), loads)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	waitOngoing := func(what string, ok func() bool) time.Duration {
		start := time.Now()
		deadline := time.After(20 * time.Second)
		for !ok() {
			select {
			case m := <-loads:
				var rep protocol.LoadReport
				if err := json.Unmarshal(m.Data, &rep); err == nil && rep.App == "leave" {
					ongoing[rep.Deployment] = rep.Ongoing
				}
			case <-deadline:
				t.Fatalf("%s: ongoing per deployment %v after 20s", what, ongoing)
			}
		}
		return time.Since(start)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := fleet.Do(ctx, http.MethodPost, f.URL()+"/leave/?delay_ms=60000", echoBody, nil)
		errc <- err
	}()
	waitOngoing("the request held at every hop", func() bool {
		return ongoing["C1"] == 1 && ongoing["C2"] == 1 && ongoing["C3"] == 1
	})
	cancel() // the client hangs up
	<-errc
	took := waitOngoing("every hop dropped the request", func() bool {
		return ongoing["C1"] == 0 && ongoing["C2"] == 0 && ongoing["C3"] == 0
	})
	t.Logf("every hop of the chain dropped the request %v after the client left", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("the chain dropped the request %v after the client left, want within a few report periods (20 ms each): not a probe or timeout", took)
	}
}

// TestHandleToUnknownDeploymentFailsItsReplica: a deployment whose
// constructor takes a handle to a name the application does not have
// (a typo) never runs: its replica is FAILED with a message naming the
// name, and a request gets 503 at once with that reason — not a wait
// for the request timeout.
func TestHandleToUnknownDeploymentFailsItsReplica(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 1, WorkerEnv: zoned("a")})
	f.RequireHandlers(handlerChain)
	app := chainOf("typo", 2, "a")
	app.Deployments[0].UserConfig = json.RawMessage(`{"next":"Bee"}`) // C1 → Bee, not C2
	f.Deploy(serveConfig(t, app))
	f.Eventually(deployTimeout, "C1 FAILED naming Bee", func() error {
		st, err := f.Status()
		if err != nil {
			return err
		}
		a := st.Applications["typo"]
		for _, r := range a.Deployments["C1"].Replicas {
			if r.State == protocol.ReplicaFailed && strings.Contains(r.Message, `"Bee"`) {
				return nil
			}
		}
		return fmt.Errorf("not yet: %s", fleet.Describe(a))
	})
	start := time.Now()
	r, err := f.Call(http.MethodPost, "/typo/", echoBody)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "Bee") || time.Since(start) > 5*time.Second {
		t.Fatalf("POST /typo/ = %s after %v, want 503 at once naming Bee", r, time.Since(start))
	}
}
