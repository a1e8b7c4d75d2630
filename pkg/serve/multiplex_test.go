package serve_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

// model is a loaded test model; Close records its id.
type model struct {
	id     string
	closed *closedLog
}

func (m *model) Close() error { m.closed.add(m.id); return nil }

type closedLog struct {
	mu  sync.Mutex
	ids []string // guarded by mu
}

func (c *closedLog) add(id string) { c.mu.Lock(); c.ids = append(c.ids, id); c.mu.Unlock() }
func (c *closedLog) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ids)
}

// loader counts loads per id; gate, if set, holds loads until closed.
type loader struct {
	closed  closedLog
	loads   sync.Map // id → *atomic.Int32
	total   atomic.Int32
	gate    chan struct{}
	started chan string
	fail    map[string]error
}

func (l *loader) load(ctx context.Context, id string) (*model, error) {
	l.total.Add(1)
	v, _ := l.loads.LoadOrStore(id, new(atomic.Int32))
	v.(*atomic.Int32).Add(1)
	if l.started != nil {
		l.started <- id
	}
	if l.gate != nil {
		select {
		case <-l.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := l.fail[id]; err != nil {
		return nil, err
	}
	return &model{id: id, closed: &l.closed}, nil
}

func (l *loader) count(id string) int32 {
	v, ok := l.loads.Load(id)
	if !ok {
		return 0
	}
	return v.(*atomic.Int32).Load()
}

// reports records what the multiplexer reported to the replica.
type reports struct {
	mu   sync.Mutex
	last []string // guarded by mu
	n    int      // guarded by mu
}

func (r *reports) hook(ids []string) {
	r.mu.Lock()
	r.last, r.n = slices.Clone(ids), r.n+1
	r.mu.Unlock()
}

func (r *reports) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func get(t *testing.T, m *serve.Multiplexer[*model], id string) *model {
	t.Helper()
	got, release, err := m.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%q) = %v", id, err)
	}
	release()
	if got.id != id {
		t.Fatalf("Get(%q) = model %q", id, got.id)
	}
	return got
}

func TestMultiplexerEvictsLeastRecentlyUsed(t *testing.T) {
	var l loader
	var rep reports
	m := serve.NewMultiplexer(serve.Init{MaxModelsPerReplica: 2, ReportModels: rep.hook, Logger: zerolog.Nop()}, l.load)
	get(t, m, "a")
	get(t, m, "b")
	get(t, m, "a") // a is now more recent than b
	if got := rep.ids(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("reported ids = %v, want [a b]", got)
	}
	get(t, m, "c") // evicts b
	if got := l.closed.get(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("closed = %v, want [b] (least recently used)", got)
	}
	if got := rep.ids(); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("reported ids = %v, want [a c]", got)
	}
	get(t, m, "a")
	get(t, m, "c")
	if l.count("a") != 1 || l.count("c") != 1 || l.total.Load() != 3 {
		t.Errorf("loads a, c, total = %d, %d, %d, want 1, 1, 3 (held models are not reloaded)", l.count("a"), l.count("c"), l.total.Load())
	}
	get(t, m, "b") // loaded again; evicts a (c was used last)
	if got := l.closed.get(); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("closed = %v, want [b a]", got)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := l.closed.get(); len(got) != 4 || !slices.Contains(got[2:], "b") || !slices.Contains(got[2:], "c") {
		t.Errorf("closed after Close = %v, want b and c closed too", got)
	}
	if _, _, err := m.Get(context.Background(), "a"); !errors.Is(err, serve.ErrMultiplexerClosed) {
		t.Errorf("Get after Close = %v, want ErrMultiplexerClosed", err)
	}
	if got := rep.ids(); len(got) != 0 {
		t.Errorf("reported ids after Close = %v, want none", got)
	}
}

func TestMultiplexerLoadsOnceForConcurrentGets(t *testing.T) {
	l := loader{gate: make(chan struct{}), started: make(chan string, 16)}
	m := serve.NewMultiplexer(serve.Init{MaxModelsPerReplica: 2}, l.load)
	var wg sync.WaitGroup
	got := make([]*model, 10)
	for i := range got {
		wg.Go(func() {
			mod, release, err := m.Get(context.Background(), "x")
			if err != nil {
				t.Errorf("Get(x) = %v", err)
				return
			}
			defer release()
			got[i] = mod
		})
	}
	<-l.started
	close(l.gate)
	wg.Wait()
	if n := l.count("x"); n != 1 {
		t.Fatalf("loads of x = %d, want 1 for 10 concurrent Gets", n)
	}
	for i, mod := range got {
		if mod != got[0] {
			t.Errorf("Get %d returned another model instance than Get 0", i)
		}
	}
}

func TestMultiplexerClosesAnEvictedModelOnlyAfterRelease(t *testing.T) {
	var l loader
	m := serve.NewMultiplexer(serve.Init{MaxModelsPerReplica: 1}, l.load)
	a, releaseA, err := m.Get(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	get(t, m, "b") // evicts a while it is in use
	if got := l.closed.get(); len(got) != 0 {
		t.Fatalf("closed = %v while a is in use, want nothing", got)
	}
	if a.id != "a" {
		t.Fatalf("model = %q", a.id)
	}
	releaseA()
	releaseA() // idempotent
	if got := l.closed.get(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("closed after release = %v, want [a] once", got)
	}
}

// ctxModel implements serve.Closer (with a context) rather than io.Closer.
type ctxModel struct{ closed *atomic.Int32 }

func (c ctxModel) Close(context.Context) error { c.closed.Add(1); return nil }

func TestMultiplexerClosesServeClosers(t *testing.T) {
	var closed atomic.Int32
	m := serve.NewMultiplexer(serve.Init{MaxModelsPerReplica: 1}, func(context.Context, string) (ctxModel, error) {
		return ctxModel{&closed}, nil
	})
	for _, id := range []string{"a", "b", "c"} {
		_, release, err := m.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	if n := closed.Load(); n != 2 {
		t.Errorf("serve.Closer models closed = %d, want 2", n)
	}
}

func TestMultiplexerLoadCancelledByItsContext(t *testing.T) {
	l := loader{gate: make(chan struct{}), started: make(chan string, 16)}
	var rep reports
	m := serve.NewMultiplexer(serve.Init{MaxModelsPerReplica: 2, ReportModels: rep.hook}, l.load)

	// The Get that started the load leaves: its load ends with its
	// context, and a Get still waiting for the same model loads it anew.
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, _, err := m.Get(ctx, "x"); first <- err }()
	<-l.started
	if got := rep.ids(); !slices.Equal(got, []string{"x"}) {
		t.Errorf("reported while loading = %v, want [x] (a loading model counts as held)", got)
	}
	second := make(chan error, 1)
	go func() {
		mod, release, err := m.Get(context.Background(), "x")
		if err == nil {
			release()
			if mod.id != "x" {
				err = fmt.Errorf("model %q", mod.id)
			}
		}
		second <- err
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context = %v, want context.Canceled", err)
	}
	// The second Get either joined the cancelled load (and retries) or
	// started its own; either way it loads x once more.
	select {
	case id := <-l.started:
		if id != "x" {
			t.Fatalf("load started for %q, want x", id)
		}
	case <-time.After(waitLimit):
		t.Fatal("the waiting Get did not load x again")
	}
	close(l.gate)
	if err := <-second; err != nil {
		t.Fatalf("second Get = %v", err)
	}
	if n := l.count("x"); n != 2 {
		t.Errorf("loads of x = %d, want 2 (the cancelled one and the retry)", n)
	}

	// A Get that waits for someone else's load leaves when its context ends.
	l2 := loader{gate: make(chan struct{}), started: make(chan string, 16)}
	m2 := serve.NewMultiplexer(serve.Init{MaxModelsPerReplica: 2}, l2.load)
	loaded := make(chan error, 1)
	go func() {
		_, release, err := m2.Get(context.Background(), "y")
		if err == nil {
			release()
		}
		loaded <- err
	}()
	<-l2.started
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer wcancel()
	if _, _, err := m2.Get(wctx, "y"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting Get past its deadline = %v, want context.DeadlineExceeded", err)
	}
	close(l2.gate)
	if err := <-loaded; err != nil {
		t.Errorf("loading Get = %v, want nil (a waiter leaving does not cancel the load)", err)
	}
}

func TestMultiplexerBadInputAndFailedLoads(t *testing.T) {
	l := loader{fail: map[string]error{"broken": errors.New("weights not found")}}
	var rep reports
	m := serve.NewMultiplexer(serve.Init{ReportModels: rep.hook}, l.load)
	if c := m.Capacity(); c != config.DefaultMaxModelsPerReplica {
		t.Errorf("Capacity() with no max_models_per_replica = %d, want %d", c, config.DefaultMaxModelsPerReplica)
	}
	_, _, err := m.Get(context.Background(), "")
	if se := serve.AsError(err); se == nil || se.Status != http.StatusBadRequest || !strings.Contains(se.Msg, protocol.HeaderModelID) {
		t.Errorf("Get(\"\") = %v, want 400 naming %s", err, protocol.HeaderModelID)
	}
	for range 2 {
		_, _, err := m.Get(context.Background(), "broken")
		if err == nil || !strings.Contains(err.Error(), `load model "broken": weights not found`) {
			t.Errorf("Get(broken) = %v, want the load error with the id", err)
		}
	}
	if n := l.count("broken"); n != 2 {
		t.Errorf("loads of broken = %d, want 2 (failures are not cached)", n)
	}
	if got := rep.ids(); len(got) != 0 {
		t.Errorf("reported ids after failed loads = %v, want none", got)
	}
	panicky := serve.NewMultiplexer(serve.Init{}, func(context.Context, string) (int, error) { panic("bad weights") })
	if _, _, err := panicky.Get(context.Background(), "p"); err == nil || !strings.Contains(err.Error(), "load panicked: bad weights") {
		t.Errorf("Get with a panicking load = %v, want an error", err)
	}
}

func TestMultiplexerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	sm, err := serve.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var l loader
	m := serve.NewMultiplexer(serve.Init{MaxModelsPerReplica: 2, Metrics: sm.ForReplica("app", "dep", "r1")}, l.load)
	sm.ForReplica("app", "dep", "idle") // a replica that never multiplexes exports nothing
	if n := count(t, reg, "jetserve_multiplexed_model_loads_total"); n != 0 {
		t.Errorf("load counter series before any load = %d, want 0", n)
	}
	for _, id := range []string{"a", "b", "a", "c", "d"} {
		get(t, m, id)
	}
	lbl := map[string]string{"replica": "r1"}
	if v := value(t, reg, "jetserve_multiplexed_model_loads_total", lbl); v != 4 {
		t.Errorf("loads = %v, want 4", v)
	}
	if v := value(t, reg, "jetserve_multiplexed_model_unloads_total", lbl); v != 2 {
		t.Errorf("unloads = %v, want 2", v)
	}
	if v := value(t, reg, "jetserve_num_multiplexed_models", lbl); v != 2 {
		t.Errorf("models held = %v, want 2", v)
	}
	if h := histogram(t, reg, "jetserve_multiplexed_model_load_latency_seconds", lbl); h.GetSampleCount() != 4 {
		t.Errorf("load latency samples = %d, want 4", h.GetSampleCount())
	}
	sm.Forget("app", "dep", "r1")
	if n := count(t, reg, "jetserve_num_multiplexed_models"); n != 0 {
		t.Errorf("series after Forget = %d, want 0", n)
	}
}

func TestHandleWithModelSetsTheHeader(t *testing.T) {
	reg := serve.NewRegistry()
	if err := reg.Register("mux", func(_ context.Context, init serve.Init) (serve.Handler, error) {
		m := serve.NewMultiplexer(init, func(_ context.Context, id string) (string, error) { return "model-" + id, nil })
		return serve.HandlerFunc(func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
			name, release, err := m.Get(ctx, serve.ModelID(req))
			if err != nil {
				return nil, err
			}
			defer release()
			return &serve.Response{Body: []byte(fmt.Sprintf("%s/%d", name, m.Capacity()))}, nil
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
	app := config.Application{Name: "a", RoutePrefix: "/a", Ingress: "M", Deployments: []config.Deployment{
		{Name: "M", Handler: "mux", MaxModelsPerReplica: 5}}}
	local, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := local.Ingress().WithModel("m7").Call(context.Background(), &serve.Request{})
	if err != nil || string(resp.Body) != "model-m7/5" {
		t.Fatalf("Call with model m7 = %v, %v, want model-m7/5 (max_models_per_replica carried to Init)", resp, err)
	}
	req := &serve.Request{}
	serve.SetModelID(req, "m8")
	if got := req.Header.Get("serve_multiplexed_model_id"); got != "m8" {
		t.Errorf("header serve_multiplexed_model_id = %q, want m8 (any case)", got)
	}
	if _, err := local.Ingress().Call(context.Background(), &serve.Request{}); serve.AsError(err).Status != http.StatusBadRequest {
		t.Errorf("Call without a model id = %v, want 400", err)
	}
}

// gather returns the metrics of family name whose labels include want.
func gather(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) []*dto.Metric {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for k, v := range want {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			out = append(out, m)
		}
	}
	return out
}

func count(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	return len(gather(t, reg, name, nil))
}

func histogram(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) *dto.Histogram {
	t.Helper()
	ms := gather(t, reg, name, want)
	if len(ms) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, want, len(ms))
	}
	return ms[0].GetHistogram()
}

func value(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	ms := gather(t, reg, name, want)
	if len(ms) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, want, len(ms))
	}
	if c := ms[0].GetCounter(); c != nil {
		return c.GetValue()
	}
	return ms[0].GetGauge().GetValue()
}
