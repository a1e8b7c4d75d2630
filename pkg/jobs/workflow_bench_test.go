package jobs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// BenchmarkWorkflows measures durable workflows on one server, end to end
// (Submit → a Runner runs the run → record SUCCEEDED), one run at a time
// for latency and 64 in flight for throughput:
//
//	empty      a workflow with no step (the job path plus the journal read)
//	3step      three journaled no-op steps
//	parallel   100 no-op steps in parallel (wf.Go, Gather)
//	resume     a workflow awaiting a no-op job: submit, suspend, the job
//	           runs, its result lands in the inbox, the run resumes
//	raw        the same JetStream writes as 3step without jetserve:
//	           5 synchronous publishes (the job, 3 journal entries, the
//	           record) and a direct get (the journal read)
//
// Each reports p50 and p99 in ms; 3step_c64 reports workflows/s. "derived"
// reports what a journaled step adds ((30 steps - empty) / 30), what 100
// parallel steps add over no step, and 3step against raw, from medians of
// 5 interleaved rounds.
func BenchmarkWorkflows(b *testing.B) {
	ns := natstest.Server(b)
	wl := newWorkflowLoops(b, ns)
	raw := newRawWrites(b, ns)
	run := func(name string, f func(n int) []time.Duration) {
		b.Run(name, func(b *testing.B) {
			lat := f(b.N)
			p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
			b.ReportMetric(ms(p50), "p50_ms")
			b.ReportMetric(ms(p99), "p99_ms")
		})
	}
	run("raw", raw.drive)
	run("empty", func(n int) []time.Duration { return wl.drive(b, "empty", n) })
	run("3step", func(n int) []time.Duration { return wl.drive(b, "three", n) })
	run("parallel100", func(n int) []time.Duration { return wl.drive(b, "parallel", n) })
	run("resume", func(n int) []time.Duration { return wl.drive(b, "resume", n) })
	b.Run("3step_c64", func(b *testing.B) {
		start := time.Now()
		wl.throughput(b, "three", b.N, benchInFlight)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "workflows/s")
	})
	b.Run("derived", func(b *testing.B) {
		var step, par, ratio []float64
		for range 5 {
			r := percentile(raw.drive(b.N), 0.5)
			e := percentile(wl.drive(b, "empty", b.N), 0.5)
			t := percentile(wl.drive(b, "three", b.N), 0.5)
			thirty := percentile(wl.drive(b, "thirty", b.N), 0.5)
			p := percentile(wl.drive(b, "parallel", b.N), 0.5)
			step = append(step, ms(thirty-e)/30)
			par = append(par, ms(p-e))
			ratio = append(ratio, float64(t)/float64(r))
		}
		for _, s := range [][]float64{step, par, ratio} {
			slices.Sort(s)
		}
		b.ReportMetric(step[2], "step_ms")
		b.ReportMetric(par[2], "parallel100_over_none_ms")
		b.ReportMetric(ratio[2], "3step/raw")
	})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(int(float64(len(s))*p), len(s)-1)]
}

// workflowLoops is a Runner with the bench's workflows and a no-op job.
type workflowLoops struct {
	e    *testEnv
	ms   map[string]config.AsyncMethod
	done chan string
	next int
}

func newWorkflowLoops(b testing.TB, ns *server.Server) *workflowLoops {
	e := envOn(b, ns)
	noop := func(serve.StepContext) (any, error) { return 1, nil }
	defs := []*serve.WorkflowDef{
		serve.NewWorkflow("empty", func(serve.Workflow, struct{}) (int, error) { return 0, nil }),
		serve.NewWorkflow("three", func(wf serve.Workflow, _ struct{}) (int, error) {
			for _, s := range []string{"a", "b", "c"} {
				if err := wf.Step(s, noop).Err(); err != nil {
					return 0, err
				}
			}
			return 3, nil
		}),
		serve.NewWorkflow("thirty", func(wf serve.Workflow, _ struct{}) (int, error) {
			for i := range 30 {
				if err := wf.Step("s"+strconv.Itoa(i), noop).Err(); err != nil {
					return 0, err
				}
			}
			return 30, nil
		}),
		serve.NewWorkflow("parallel", func(wf serve.Workflow, _ struct{}) (int, error) {
			fs := make([]*serve.Future, 100)
			for i := range fs {
				fs[i] = wf.Go("s"+strconv.Itoa(i), noop)
			}
			return len(fs), wf.Gather(fs...)
		}),
		serve.NewWorkflow("resume", func(wf serve.Workflow, _ struct{}) (int, error) {
			var v int
			return v, wf.Submit("job", nil).Get(&v)
		}),
	}
	l := &workflowLoops{e: e, ms: map[string]config.AsyncMethod{}, done: make(chan string, 1<<16)}
	methods := []config.AsyncMethod{{Name: "job", MaxQueued: 1 << 20, MaxRunning: 1000, LeaseTimeout: config.Duration(30 * time.Second)}}
	for _, d := range defs {
		methods = append(methods, config.AsyncMethod{Name: d.Name(), Workflow: true, MaxQueued: 1 << 20, MaxRunning: 1000,
			LeaseTimeout: config.Duration(30 * time.Second)})
	}
	for _, m := range methods {
		m := withDefaults(m)
		if err := e.q.Ensure(context.Background(), testApp, testDep, m); err != nil {
			b.Fatal(err)
		}
		l.ms[m.Name] = m
	}
	rnc := natstest.Conn(b, ns)
	rjs, _ := jetstream.New(rnc)
	r := NewRunner(rnc, rjs, e.names, RunnerConfig{App: testApp, Deployment: testDep, Replica: "r", Slots: benchInFlight * 2,
		Methods: methods, Log: zerolog.Nop(),
		Handler: serve.WorkflowJobs(jobHandler(func(serve.JobContext, *serve.Job) (any, error) { return 1, nil }), defs)})
	r.onDone = func(id string, s Status) {
		if s != Succeeded {
			b.Errorf("run %s ended %s", id, s)
		}
		l.done <- id
	}
	runRunner(b, r)
	return l
}

// jobHandler is a Handler that is also a JobHandler (WorkflowJobs's
// fallback for plain async methods).
type jobHandler func(serve.JobContext, *serve.Job) (any, error)

func (f jobHandler) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return nil, nil
}
func (f jobHandler) RunJob(c serve.JobContext, j *serve.Job) (any, error) { return f(c, j) }

func (l *workflowLoops) submit(b testing.TB, wf string) string {
	l.next++
	id := fmt.Sprintf("%s-%d", wf, l.next)
	if _, _, err := l.e.q.Submit(context.Background(), testApp, testDep, l.ms[wf], id, nil); err != nil {
		b.Fatal(err)
	}
	return id
}

// drive runs n runs of wf one at a time and returns their latencies
// (submit to SUCCEEDED recorded).
func (l *workflowLoops) drive(b testing.TB, wf string, n int) []time.Duration {
	lat := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		id := l.submit(b, wf)
		for got := <-l.done; got != id; got = <-l.done {
			// a child job of "resume" ended first
		}
		lat = append(lat, time.Since(t))
	}
	return lat
}

// throughput runs n runs of wf, inFlight at a time.
func (l *workflowLoops) throughput(b *testing.B, wf string, n, inFlight int) {
	pending := 0
	for range n {
		for ; pending >= inFlight; pending-- {
			<-l.done
		}
		l.submit(b, wf)
		pending++
	}
	for ; pending > 0; pending-- {
		<-l.done
	}
}

// rawWrites is the JetStream cost of a 3-step workflow without jetserve.
type rawWrites struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	next   int
}

func newRawWrites(b *testing.B, ns *server.Server) *rawWrites {
	e := envOn(b, ns)
	s, err := e.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "RAWWF", Subjects: []string{"rawwf.>"},
		AllowDirect: true, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	return &rawWrites{js: e.js, stream: s}
}

func (r *rawWrites) drive(n int) []time.Duration {
	ctx := context.Background()
	lat := make([]time.Duration, 0, n)
	for range n {
		r.next++
		run := "rawwf." + strconv.Itoa(r.next)
		t := time.Now()
		_, _ = r.js.Publish(ctx, run+".job", []byte(`{"request_id":"x","status":"QUEUED"}`))
		_, _ = r.stream.GetLastMsgForSubject(ctx, run+".>")
		for i := range 3 {
			_, _ = r.js.Publish(ctx, run+".j", []byte(`{"pos":`+strconv.Itoa(i)+`,"kind":"step","name":"a","result":1}`))
		}
		_, _ = r.js.Publish(ctx, run+".rec", []byte(`{"request_id":"x","status":"SUCCEEDED"}`))
		lat = append(lat, time.Since(t))
	}
	return lat
}
