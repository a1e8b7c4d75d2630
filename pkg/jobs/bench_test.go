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
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

const benchInFlight = 64

// BenchmarkJobs compares, in one run, a raw JetStream loop (publish → pull →
// ack → KV put) with the jobs path (Submit → Runner runs a no-op → record
// SUCCEEDED), both with 64 in flight, and reports jobs/s; its latency
// sub-benchmarks report the submit-to-start p50 at low load (one at a time).
func BenchmarkJobs(b *testing.B) {
	b.Run("raw", func(b *testing.B) { benchRaw(b, benchInFlight, false) })
	b.Run("jobs", func(b *testing.B) { benchJobs(b, benchInFlight, false) })
	b.Run("raw_latency", func(b *testing.B) { benchRaw(b, 1, true) })
	b.Run("jobs_latency", func(b *testing.B) { benchJobs(b, 1, true) })
}

func report(b *testing.B, n int, elapsed time.Duration, lat []time.Duration) {
	b.ReportMetric(float64(n)/elapsed.Seconds(), "jobs/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
}

func benchRaw(b *testing.B, inFlight int, latency bool) {
	ns := natstest.Server(b)
	nc := natstest.Conn(b, ns)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"},
		Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1000})
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "rawkv", Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	sem := make(chan struct{}, inFlight)
	sent := make(map[string]time.Time)
	var lat []time.Duration
	lats := make(chan time.Duration, b.N)
	cnc := natstest.Conn(b, ns)
	cjs, _ := jetstream.New(cnc)
	ccons, _ := cjs.Consumer(ctx, "RAW", cons.CachedInfo().Name)
	ckv, _ := cjs.KeyValue(ctx, kv.Bucket())
	it, err := ccons.Messages(jetstream.PullMaxMessages(inFlight))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range b.N {
			m, err := it.Next()
			if err != nil {
				return
			}
			if latency {
				t, _ := time.Parse(time.RFC3339Nano, m.Headers().Get("T"))
				lats <- time.Since(t)
			}
			_, _ = ckv.Put(ctx, "k"+m.Subject()[4:], []byte(`"done"`))
			_ = m.Ack()
			<-sem
		}
	}()
	_ = sent
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		sem <- struct{}{}
		msg := &nats.Msg{Subject: "raw." + strconv.Itoa(i), Data: []byte(`{}`), Header: nats.Header{}}
		msg.Header.Set("T", time.Now().Format(time.RFC3339Nano))
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(strconv.Itoa(i))); err != nil {
			b.Fatal(err)
		}
		if latency {
			sem <- struct{}{} // wait until processed: one at a time
			<-sem
		}
	}
	<-done
	elapsed := time.Since(start)
	b.StopTimer()
	close(lats)
	for d := range lats {
		lat = append(lat, d)
	}
	report(b, b.N, elapsed, lat)
}

func benchJobs(b *testing.B, inFlight int, latency bool) {
	e := newEnv(b)
	m := config.AsyncMethod{Name: "noop", MaxQueued: 100000, MaxRunning: 1000, LeaseTimeout: config.Duration(30 * time.Second)}
	ctx := context.Background()
	if err := e.q.Ensure(ctx, testApp, testDep, m); err != nil {
		b.Fatal(err)
	}
	sem := make(chan struct{}, inFlight)
	lats := make(chan time.Duration, b.N+1)
	submitted := make(chan time.Time, 1)
	rnc := natstest.Conn(b, e.ns)
	rjs, _ := jetstream.New(rnc)
	r := NewRunner(rnc, rjs, e.names, RunnerConfig{App: testApp, Deployment: testDep, Replica: "r", Slots: inFlight,
		Methods: []config.AsyncMethod{m}, Log: zerolog.Nop(),
		Handler: handlerFunc(func(serve.JobContext, *serve.Job) (any, error) { return nil, nil })})
	if latency {
		r.onStart = func(string) { lats <- time.Since(<-submitted) }
	}
	r.onDone = func(string, Status) { <-sem }
	rctx, cancel := context.WithCancel(ctx)
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = r.Run(rctx) }()
	defer func() { cancel(); <-runDone }()
	if err := rnc.Flush(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the runner subscribe before timing
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		sem <- struct{}{}
		if latency {
			submitted <- time.Now()
		}
		if _, _, err := e.q.Submit(ctx, testApp, testDep, m, "j"+strconv.Itoa(i), nil); err != nil {
			b.Fatal(fmt.Errorf("Submit: %w", err))
		}
		if latency {
			sem <- struct{}{}
			<-sem
		}
	}
	for range inFlight {
		sem <- struct{}{}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	close(lats)
	var lat []time.Duration
	for d := range lats {
		lat = append(lat, d)
	}
	report(b, b.N, elapsed, lat)
}
