package jobs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

const benchInFlight = 64

// BenchmarkJobs compares, on one server, a raw JetStream loop (publish →
// pull → ack → KV put) with the job path (Submit → Runner runs a no-op →
// record SUCCEEDED → ack), 64 jobs in flight from one submitter, as one
// ingress connection would send them. "jobs" submits without a request id
// (generated), "jobs_ids" with client-chosen ids (the idempotency check
// reads the records bucket on every submit). The *_c64 runs submit from 64
// goroutines at once (64 clients), which makes both loops CPU-bound on this
// machine. The *_latency runs measure submit-to-start one job at a time.
// "ratio" and "ratio_c64" alternate the loops for 5 rounds of b.N jobs
// each and report the median throughput ratios, which this noisy 2-core
// machine keeps steadier than separate runs.
func BenchmarkJobs(b *testing.B) {
	ns := natstest.Server(b)
	raw := newRawLoop(b, ns)
	jobs := newJobsLoop(b, ns, false, nil)
	ids := newJobsLoop(b, ns, true, nil)
	b.Run("raw", func(b *testing.B) { raw.bench(b, benchInFlight) })
	b.Run("jobs", func(b *testing.B) { jobs.bench(b, benchInFlight) })
	b.Run("jobs_ids", func(b *testing.B) { ids.bench(b, benchInFlight) })
	b.Run("raw_c64", func(b *testing.B) { raw.benchConcurrent(b, benchInFlight) })
	b.Run("jobs_c64", func(b *testing.B) { jobs.benchConcurrent(b, benchInFlight) })
	b.Run("raw_latency", func(b *testing.B) { raw.bench(b, 1) })
	b.Run("jobs_latency", func(b *testing.B) { jobs.bench(b, 1) })
	b.Run("ratio", func(b *testing.B) {
		var rj, ri, cj, ci []float64
		for range 5 {
			c0 := processCPU(b)
			r, _ := raw.drive(b, b.N, benchInFlight)
			c1 := processCPU(b)
			j, _ := jobs.drive(b, b.N, benchInFlight)
			c2 := processCPU(b)
			i, _ := ids.drive(b, b.N, benchInFlight)
			c3 := processCPU(b)
			rj, ri = append(rj, j/r), append(ri, i/r)
			cj, ci = append(cj, float64(c2-c1)/float64(c1-c0)), append(ci, float64(c3-c2)/float64(c1-c0))
		}
		slices.Sort(rj)
		slices.Sort(ri)
		slices.Sort(cj)
		slices.Sort(ci)
		b.ReportMetric(rj[2], "jobs/raw")
		b.ReportMetric(ri[2], "jobs_ids/raw")
		// CPU time of this process (client and embedded server) per job,
		// relative to the raw loop's: steadier than throughput on a
		// machine shared with other work.
		b.ReportMetric(cj[2], "cpu_jobs/raw")
		b.ReportMetric(ci[2], "cpu_jobs_ids/raw")
		if b.N < 100 {
			return // the probe run of b.N = 1
		}
		fmt.Printf("job path, 1 submitter (medians of 5 interleaved rounds): %.2fx the raw loop (target >= 0.8x): %s; client-chosen ids %.2fx (target >= 0.7x): %s; CPU per job %.2fx / %.2fx the raw loop's\n",
			rj[2], verdict(rj[2] >= 0.8), ri[2], verdict(ri[2] >= 0.7), cj[2], ci[2])
	})
	// With job metrics (counters, duration and queue-wait histograms) vs
	// without, interleaved: what the metrics cost the job path.
	b.Run("metrics_ratio", func(b *testing.B) {
		met, err := NewMetrics(prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		withMet := newJobsLoop(b, ns, false, met)
		var rm []float64
		for round := range 6 { // which goes first alternates
			var j, m float64
			if round%2 == 0 {
				j, _ = jobs.drive(b, b.N, benchInFlight)
				m, _ = withMet.drive(b, b.N, benchInFlight)
			} else {
				m, _ = withMet.drive(b, b.N, benchInFlight)
				j, _ = jobs.drive(b, b.N, benchInFlight)
			}
			rm = append(rm, m/j)
		}
		slices.Sort(rm)
		b.ReportMetric((rm[2]+rm[3])/2, "metrics/none")
	})
	b.Run("ratio_c64", func(b *testing.B) {
		var rj []float64
		for range 5 {
			rj = append(rj, jobs.driveConcurrent(b, b.N, benchInFlight)/raw.driveConcurrent(b, b.N, benchInFlight))
		}
		slices.Sort(rj)
		b.ReportMetric(rj[2], "jobs/raw")
		if b.N < 100 {
			return
		}
		fmt.Printf("job path, 64 submitters (medians of 5 interleaved rounds): %.2fx the raw loop (target >= 0.8x): %s\n", rj[2], verdict(rj[2] >= 0.8))
	})
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchLoop is one system under test: submit sends job i; done receives
// one value per finished job and started the time each job began.
type benchLoop struct {
	submit  func(i int) error
	done    chan struct{}
	started chan time.Time
	next    int
}

func newBenchLoop(submit func(i int) error) *benchLoop {
	return &benchLoop{submit: submit, done: make(chan struct{}, 1<<16), started: make(chan time.Time, 1<<16)}
}

// start records that a job began (dropped when nobody reads: throughput runs).
func (l *benchLoop) start() {
	select {
	case l.started <- time.Now():
	default:
	}
}

// benchJobWait bounds the wait for one job to finish: a job that never
// does fails the benchmark rather than hanging it.
const benchJobWait = 2 * time.Minute

// finished waits for one job to finish (bounded by benchJobWait).
func (l *benchLoop) finished(b *testing.B) {
	select {
	case <-l.done:
	case <-time.After(benchJobWait):
		b.Fatalf("no job finished in %v (job %d submitted last)", benchJobWait, l.next-1)
	}
}

// drive runs n jobs, at most inFlight at a time, and returns jobs/s and
// (inFlight 1) the submit-to-start latencies.
func (l *benchLoop) drive(b *testing.B, n, inFlight int) (float64, []time.Duration) {
	for len(l.started) > 0 {
		<-l.started
	}
	var lat []time.Duration
	start := time.Now()
	pending := 0
	for range n {
		for ; pending >= inFlight; pending-- {
			l.finished(b)
		}
		t := time.Now()
		if err := l.submit(l.next); err != nil {
			b.Fatal(err)
		}
		l.next++
		pending++
		if inFlight == 1 {
			l.finished(b)
			pending--
			lat = append(lat, (<-l.started).Sub(t))
		}
	}
	for ; pending > 0; pending-- {
		l.finished(b)
	}
	return float64(n) / time.Since(start).Seconds(), lat
}

// driveConcurrent runs n jobs from clients goroutines at once, at most
// clients in flight, and returns jobs/s. A failed submit, or no job
// finished for benchJobWait, stops every goroutine and fails b.
func (l *benchLoop) driveConcurrent(b *testing.B, n, clients int) float64 {
	base := l.next
	l.next += n
	var next atomic.Int64
	slots := make(chan struct{}, clients)
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	var stalled atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() { // collects the dones
		for range n {
			select {
			case <-l.done:
			case <-stop:
				return
			case <-time.After(benchJobWait):
				stalled.Store(true)
				halt()
				return
			}
			<-slots
		}
	})
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				select {
				case slots <- struct{}{}:
				case <-stop:
					return
				}
				if err := l.submit(base + i); err != nil {
					b.Error(err)
					halt()
					return
				}
			}
		})
	}
	wg.Wait()
	if stalled.Load() {
		b.Fatalf("no job finished in %v", benchJobWait)
	}
	if b.Failed() {
		b.FailNow()
	}
	return float64(n) / time.Since(start).Seconds()
}

func (l *benchLoop) benchConcurrent(b *testing.B, clients int) {
	b.ResetTimer()
	rate := l.driveConcurrent(b, b.N, clients)
	b.StopTimer()
	b.ReportMetric(rate, "jobs/s")
}

func (l *benchLoop) bench(b *testing.B, inFlight int) {
	b.ResetTimer()
	rate, lat := l.drive(b, b.N, inFlight)
	b.StopTimer()
	b.ReportMetric(rate, "jobs/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
}

// newRawLoop: publish (with a message id) to a work-queue stream; a
// consumer on its own connection pulls (64 buffered) and hands each
// message to one of 64 workers, which puts a KV value and acks.
func newRawLoop(b *testing.B, ns *server.Server) *benchLoop {
	nc := natstest.Conn(b, ns)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"},
		Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1000}); err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "rawkv", Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	cjs, _ := jetstream.New(natstest.Conn(b, ns))
	cons, _ := cjs.Consumer(ctx, "RAW", "c")
	kv, _ := cjs.KeyValue(ctx, "rawkv")
	it, err := cons.Messages(jetstream.PullMaxMessages(benchInFlight))
	if err != nil {
		b.Fatal(err)
	}
	l := newBenchLoop(func(i int) error {
		id := strconv.Itoa(i)
		_, err := js.Publish(ctx, "raw."+id, []byte(`{}`), jetstream.WithMsgID(id))
		return err
	})
	// As many workers as the runner has slots: each puts and acks.
	msgs := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range benchInFlight {
		wg.Go(func() {
			for m := range msgs {
				_, _ = kv.Put(ctx, "k"+m.Subject()[4:], []byte(`"done"`))
				_ = m.Ack()
				l.done <- struct{}{}
			}
		})
	}
	wg.Go(func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				return
			}
			l.start()
			msgs <- m
		}
	})
	b.Cleanup(func() { it.Stop(); wg.Wait() })
	return l
}

// newJobsLoop: Queue.Submit (ids generated, or client-chosen) and one
// Runner with 64 slots running a no-op handler.
func newJobsLoop(b *testing.B, ns *server.Server, withIDs bool, met *Metrics) *benchLoop {
	e := envOn(b, ns)
	m := config.AsyncMethod{Name: "noop", MaxQueued: 1 << 20, MaxRunning: 1000, LeaseTimeout: config.Duration(30 * time.Second)}
	if withIDs {
		m.Name = "noop_ids"
	}
	if met != nil {
		m.Name += "_metrics"
		e.q = NewQueue(e.js, e.names, zerolog.Nop(), WithMetrics(met))
	}
	ctx := context.Background()
	if err := e.q.Ensure(ctx, testApp, testDep, m); err != nil {
		b.Fatal(err)
	}
	l := newBenchLoop(func(i int) error {
		id := ""
		if withIDs {
			id = "j" + strconv.Itoa(i)
		}
		_, _, err := e.q.Submit(ctx, testApp, testDep, m, id, nil)
		return err
	})
	rnc := natstest.Conn(b, ns)
	rjs, _ := jetstream.New(rnc)
	r := NewRunner(rnc, rjs, e.names, RunnerConfig{App: testApp, Deployment: testDep, Replica: "r", Slots: benchInFlight,
		Methods: []config.AsyncMethod{m}, Log: zerolog.Nop(), Metrics: met,
		Handler: handlerFunc(func(serve.JobContext, *serve.Job) (any, error) { return nil, nil })})
	r.onStart = func(string) { l.start() }
	r.onDone = func(string, Status) { l.done <- struct{}{} }
	runRunner(b, r)
	return l
}
