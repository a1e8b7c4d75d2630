package serve_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait in these tests (the machine is shared and slow).
const waitLimit = 10 * time.Second

// recorder is a batch function that multiplies by 10 and records the
// sizes of the batches it saw.
type recorder struct {
	mu    sync.Mutex
	sizes []int // guarded by mu
	seen  []int // guarded by mu: every input
}

func (r *recorder) fn(_ context.Context, in []int) ([]int, error) {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(in))
	r.seen = append(r.seen, in...)
	r.mu.Unlock()
	out := make([]int, len(in))
	for i, v := range in {
		out[i] = v * 10
	}
	return out, nil
}

func (r *recorder) batchSizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sizes)
}

func newBatcher[In, Out any](t *testing.T, fn serve.BatchFunc[In, Out], o serve.BatchOptions, opts ...serve.BatcherOption) *serve.Batcher[In, Out] {
	t.Helper()
	b, err := serve.NewBatcher(fn, o, opts...)
	if err != nil {
		t.Fatalf("NewBatcher(%+v) = %v", o, err)
	}
	t.Cleanup(b.Close)
	return b
}

// doAll calls b.Do for each input concurrently and returns outputs and
// errors by input index.
func doAll[In, Out any](ctx context.Context, b *serve.Batcher[In, Out], ins []In) ([]Out, []error) {
	outs, errs := make([]Out, len(ins)), make([]error, len(ins))
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Go(func() { outs[i], errs[i] = b.Do(ctx, in) })
	}
	wg.Wait()
	return outs, errs
}

func TestBatcherFillsBatchesUpToMaxBatchSize(t *testing.T) {
	var r recorder
	// A wait no test outlasts: only full batches can run.
	b := newBatcher(t, r.fn, serve.BatchOptions{MaxBatchSize: 4, BatchWaitTimeout: time.Hour, MaxConcurrentBatches: 1})
	ins := []int{1, 2, 3, 4, 5, 6, 7, 8}
	outs, errs := doAll(context.Background(), b, ins)
	for i := range ins {
		if errs[i] != nil || outs[i] != ins[i]*10 {
			t.Errorf("Do(%d) = %d, %v, want %d, nil", ins[i], outs[i], errs[i], ins[i]*10)
		}
	}
	if got := r.batchSizes(); !slices.Equal(got, []int{4, 4}) {
		t.Errorf("batch sizes = %v, want [4 4]", got)
	}
}

func TestBatcherLoneRequestWaitsAtMostBatchWaitTimeout(t *testing.T) {
	for _, wait := range []time.Duration{0, 50 * time.Millisecond} {
		t.Run(wait.String(), func(t *testing.T) {
			var r recorder
			b := newBatcher(t, r.fn, serve.BatchOptions{MaxBatchSize: 100, BatchWaitTimeout: wait, MaxConcurrentBatches: 1})
			start := time.Now()
			out, err := b.Do(context.Background(), 7)
			took := time.Since(start)
			if err != nil || out != 70 {
				t.Fatalf("Do(7) = %d, %v, want 70, nil", out, err)
			}
			// It waits for company for the whole timeout, and not forever
			// (the upper bound is generous: the machine is shared).
			if took < wait || took > wait+2*time.Second {
				t.Errorf("a lone Do took %v, want between %v and %v", took, wait, wait+2*time.Second)
			}
			if got := r.batchSizes(); !slices.Equal(got, []int{1}) {
				t.Errorf("batch sizes = %v, want [1]", got)
			}
		})
	}
}

func TestBatcherErrorsReachTheirCallers(t *testing.T) {
	errOdd := errors.New("odd input")
	tests := []struct {
		name    string
		fn      serve.BatchFunc[int, int]
		wantErr func(in int) string // "" = success with in*10
	}{
		{"per-input errors", func(_ context.Context, in []int) ([]int, error) {
			out, errs := make([]int, len(in)), make(serve.BatchErrors, len(in))
			for i, v := range in {
				if v%2 == 1 {
					errs[i] = fmt.Errorf("input %d: %w", v, errOdd)
				}
				out[i] = v * 10
			}
			return out, errs
		}, func(in int) string {
			if in%2 == 1 {
				return "odd input"
			}
			return ""
		}},
		{"whole-batch error", func(context.Context, []int) ([]int, error) {
			return nil, errors.New("model crashed")
		}, func(int) string { return "model crashed" }},
		{"wrong number of results", func(_ context.Context, in []int) ([]int, error) {
			return make([]int, len(in)-1), nil
		}, func(int) string { return "batch function returned 3 results for 4 inputs" }},
		{"panic", func(context.Context, []int) ([]int, error) {
			panic("index out of range")
		}, func(int) string { return "batch function panicked: index out of range" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBatcher(t, tc.fn, serve.BatchOptions{MaxBatchSize: 4, BatchWaitTimeout: time.Hour, MaxConcurrentBatches: 1})
			ins := []int{1, 2, 3, 4}
			outs, errs := doAll(context.Background(), b, ins)
			for i, in := range ins {
				want := tc.wantErr(in)
				switch {
				case want == "" && (errs[i] != nil || outs[i] != in*10):
					t.Errorf("Do(%d) = %d, %v, want %d, nil", in, outs[i], errs[i], in*10)
				case want != "" && (errs[i] == nil || !strings.Contains(errs[i].Error(), want)):
					t.Errorf("Do(%d) error = %v, want one containing %q", in, errs[i], want)
				}
			}
		})
	}
}

func TestBatcherCallerThatLeavesDoesNotBreakTheBatch(t *testing.T) {
	started := make(chan []int, 4)
	release := make(chan struct{})
	batchCtxErr := make(chan error, 4)
	fn := func(ctx context.Context, in []int) ([]int, error) {
		started <- in
		select {
		case <-release:
			batchCtxErr <- ctx.Err()
		case <-ctx.Done():
			batchCtxErr <- ctx.Err()
			return nil, ctx.Err()
		}
		out := make([]int, len(in))
		for i, v := range in {
			out[i] = v * 10
		}
		return out, nil
	}
	b := newBatcher(t, fn, serve.BatchOptions{MaxBatchSize: 3, BatchWaitTimeout: time.Hour, MaxConcurrentBatches: 1})

	// Three callers fill a batch; one of them leaves while it runs.
	leaveCtx, leave := context.WithCancel(context.Background())
	type result struct {
		in, out int
		err     error
	}
	results := make(chan result, 3)
	for _, in := range []int{1, 2, 3} {
		ctx := context.Background()
		if in == 2 {
			ctx = leaveCtx
		}
		go func() {
			out, err := b.Do(ctx, in)
			results <- result{in, out, err}
		}()
	}
	select {
	case <-started:
	case <-time.After(waitLimit):
		t.Fatal("the full batch did not start")
	}
	leave()
	r := <-results
	if r.in != 2 || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("first answer = %+v, want input 2 with context.Canceled", r)
	}
	close(release)
	for range 2 {
		r := <-results
		if r.err != nil || r.out != r.in*10 {
			t.Errorf("Do(%d) = %d, %v, want %d, nil", r.in, r.out, r.err, r.in*10)
		}
	}
	if err := <-batchCtxErr; err != nil {
		t.Errorf("batch context error = %v, want nil while two callers wait", err)
	}

	// A caller that leaves before its batch starts is not in it; when every
	// caller of a running batch leaves, the batch's context ends.
	blockedRelease := make(chan struct{})
	b2 := newBatcher(t, func(ctx context.Context, in []int) ([]int, error) {
		started <- in
		select {
		case <-blockedRelease:
		case <-ctx.Done():
			batchCtxErr <- ctx.Err()
			return nil, ctx.Err()
		}
		return make([]int, len(in)), nil
	}, serve.BatchOptions{MaxBatchSize: 1, BatchWaitTimeout: 0, MaxConcurrentBatches: 1})
	firstCtx, cancelFirst := context.WithCancel(context.Background())
	firstDone := make(chan error, 1)
	go func() { _, err := b2.Do(firstCtx, 100); firstDone <- err }()
	if got := <-started; !slices.Equal(got, []int{100}) {
		t.Fatalf("first batch = %v, want [100]", got)
	}
	queuedCtx, cancelQueued := context.WithCancel(context.Background())
	queuedDone := make(chan error, 1)
	go func() { _, err := b2.Do(queuedCtx, 200); queuedDone <- err }()
	cancelQueued()
	if err := <-queuedDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do of a queued caller that left = %v, want context.Canceled", err)
	}
	cancelFirst()
	if err := <-firstDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do of a running caller that left = %v, want context.Canceled", err)
	}
	if err := <-batchCtxErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("batch context after its only caller left: %v, want context.Canceled", err)
	}
	close(blockedRelease)
	if out, err := b2.Do(context.Background(), 300); err != nil || out != 0 {
		t.Fatalf("Do(300) = %d, %v, want 0, nil", out, err)
	}
	if got := <-started; !slices.Equal(got, []int{300}) {
		t.Fatalf("batch after the leavers = %v, want [300]: a caller that left was run", got)
	}
}

func TestBatcherSetOptionsWhileRunning(t *testing.T) {
	var r recorder
	b := newBatcher(t, r.fn, serve.BatchOptions{MaxBatchSize: 2, BatchWaitTimeout: time.Hour, MaxConcurrentBatches: 1})
	doAll(context.Background(), b, []int{1, 2})
	if err := b.SetOptions(serve.BatchOptions{MaxBatchSize: 3, BatchWaitTimeout: time.Hour, MaxConcurrentBatches: 1}); err != nil {
		t.Fatal(err)
	}
	doAll(context.Background(), b, []int{3, 4, 5})
	if got := r.batchSizes(); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("batch sizes = %v, want [2 3] (the new max_batch_size applies)", got)
	}

	// A caller waiting on the hour-long timeout is released when the
	// timeout is shortened.
	done := make(chan error, 1)
	go func() { _, err := b.Do(context.Background(), 6); done <- err }()
	waitfor.True(t, waitLimit, "the lone caller to be queued", func() bool { return b.Waiting() == 1 })
	if err := b.SetOptions(serve.BatchOptions{MaxBatchSize: 3, BatchWaitTimeout: 0, MaxConcurrentBatches: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Do(6) = %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("a caller queued under an hour-long timeout was not released by SetOptions(batch_wait_timeout: 0)")
	}

	err := b.SetOptions(serve.BatchOptions{MaxBatchSize: 0, BatchWaitTimeout: -time.Second, MaxConcurrentBatches: 0})
	for _, field := range []string{"max_batch_size", "batch_wait_timeout", "max_concurrent_batches"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("SetOptions(invalid) = %v, want an error naming %s", err, field)
		}
	}
	if got := b.Options(); got.MaxBatchSize != 3 || got.BatchWaitTimeout != 0 {
		t.Errorf("Options() after an invalid SetOptions = %+v, want the previous options", got)
	}
}

func TestBatcherRunsAtMostMaxConcurrentBatches(t *testing.T) {
	var running, peak atomic.Int32
	started := make(chan struct{}, 8)
	release := make(chan struct{})
	fn := func(_ context.Context, in []int) ([]int, error) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		started <- struct{}{}
		<-release
		running.Add(-1)
		return in, nil
	}
	b := newBatcher(t, fn, serve.BatchOptions{MaxBatchSize: 1, BatchWaitTimeout: 0, MaxConcurrentBatches: 2})
	done := make(chan struct{})
	go func() {
		defer close(done)
		doAll(context.Background(), b, []int{1, 2, 3, 4, 5})
	}()
	for range 2 {
		select {
		case <-started:
		case <-time.After(waitLimit):
			t.Fatal("two batches did not start")
		}
	}
	// The other three wait for a slot: none starts while two run.
	waitfor.True(t, waitLimit, "three inputs waiting", func() bool { return b.Waiting() == 3 })
	select {
	case <-started:
		t.Fatal("a third batch started while two were running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-done
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrent batches = %d, want 2", p)
	}
}

func TestBatcherCloseRunsWhatWaitsAndRefusesMore(t *testing.T) {
	var r recorder
	b, err := serve.NewBatcher(r.fn, serve.BatchOptions{MaxBatchSize: 10, BatchWaitTimeout: time.Hour, MaxConcurrentBatches: 1})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		out, err := b.Do(context.Background(), 4)
		if err == nil && out != 40 {
			err = fmt.Errorf("out = %d, want 40", out)
		}
		done <- err
	}()
	waitfor.True(t, waitLimit, "the caller to be queued", func() bool { return b.Waiting() == 1 })
	b.Close() // runs the queued input at once, without waiting the hour
	if err := <-done; err != nil {
		t.Fatalf("Do queued before Close = %v, want 40", err)
	}
	if _, err := b.Do(context.Background(), 5); !errors.Is(err, serve.ErrBatcherClosed) {
		t.Fatalf("Do after Close = %v, want ErrBatcherClosed", err)
	}
	b.Close() // idempotent
}

func TestNewBatcherRejectsBadOptions(t *testing.T) {
	fn := (&recorder{}).fn
	if _, err := serve.NewBatcher(fn, serve.BatchOptions{}); err == nil || !strings.Contains(err.Error(), "max_batch_size: must be >= 1, got 0") {
		t.Errorf("NewBatcher(zero options) = %v, want max_batch_size named", err)
	}
	if _, err := serve.NewBatcher[int, int](nil, serve.DefaultBatchOptions()); err == nil {
		t.Error("NewBatcher(nil function) = nil error")
	}
}

func TestBatchOptionsFromUserConfig(t *testing.T) {
	var cfg struct {
		Batch serve.BatchOptions `json:"batch"`
	}
	cfg.Batch = serve.DefaultBatchOptions()
	if err := json.Unmarshal([]byte(`{"batch":{"max_batch_size":16,"batch_wait_timeout":"5ms"}}`), &cfg); err != nil {
		t.Fatal(err)
	}
	want := serve.BatchOptions{MaxBatchSize: 16, BatchWaitTimeout: 5 * time.Millisecond, MaxConcurrentBatches: 1}
	if cfg.Batch != want {
		t.Errorf("decoded %+v, want %+v (absent fields keep the defaults)", cfg.Batch, want)
	}
	if err := json.Unmarshal([]byte(`{"batch":{"batch_wait_timeout":0.02}}`), &cfg); err != nil || cfg.Batch.BatchWaitTimeout != 20*time.Millisecond {
		t.Errorf("batch_wait_timeout 0.02 (seconds) = %v, %v, want 20ms", cfg.Batch.BatchWaitTimeout, err)
	}
	if err := json.Unmarshal([]byte(`{"batch":{"max_batchsize":16}}`), &cfg); err == nil || !strings.Contains(err.Error(), "max_batchsize") {
		t.Errorf("unknown field: %v, want an error naming max_batchsize", err)
	}
	b, err := json.Marshal(want)
	if err != nil || string(b) != `{"max_batch_size":16,"batch_wait_timeout":"5ms","max_concurrent_batches":1}` {
		t.Errorf("Marshal = %s, %v", b, err)
	}
}

func TestBatcherRecordsBatchSizes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := serve.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var r recorder
	b := newBatcher(t, r.fn, serve.BatchOptions{MaxBatchSize: 3, BatchWaitTimeout: time.Hour, MaxConcurrentBatches: 1},
		serve.WithBatchMetrics(m.ForReplica("app", "dep", "r1"), "predict"))
	doAll(context.Background(), b, []int{1, 2, 3, 4, 5, 6})
	h := histogram(t, reg, "jetserve_actual_batch_size", map[string]string{"replica": "r1", "batcher": "predict"})
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 6 {
		t.Errorf("jetserve_actual_batch_size count, sum = %d, %v, want 2, 6", h.GetSampleCount(), h.GetSampleSum())
	}
	m.Forget("app", "dep", "r1")
	if n := count(t, reg, "jetserve_actual_batch_size"); n != 0 {
		t.Errorf("series after Forget = %d, want 0", n)
	}

	// Without metrics (the in-process backend) nothing is recorded and
	// nothing breaks.
	b2 := newBatcher(t, r.fn, serve.DefaultBatchOptions(), serve.WithBatchMetrics(nil, "predict"))
	if out, err := b2.Do(context.Background(), 1); err != nil || out != 10 {
		t.Errorf("Do without metrics = %d, %v", out, err)
	}
}
