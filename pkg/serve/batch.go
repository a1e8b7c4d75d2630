package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/panics"
	"github.com/prometheus/client_golang/prometheus"
)

// BatchOptions configure a Batcher: Ray Serve's @serve.batch parameters.
// In a user_config they read {"max_batch_size": 16, "batch_wait_timeout":
// "5ms", "max_concurrent_batches": 2} (a timeout may also be a number of
// seconds, as Ray's batch_wait_timeout_s).
type BatchOptions struct {
	// MaxBatchSize is the most inputs one call of the batch function gets.
	MaxBatchSize int
	// BatchWaitTimeout is how long a batch waits to fill once its first
	// input arrived and a batch slot is free: a lone request waits at most
	// this long. 0 runs whatever has arrived at once.
	BatchWaitTimeout time.Duration
	// MaxConcurrentBatches is how many calls of the batch function run at
	// once; inputs that arrive meanwhile wait and form the next batch.
	MaxConcurrentBatches int
}

// DefaultBatchOptions returns Ray Serve's defaults: batches of up to 10,
// a 10 ms wait, one batch at a time.
func DefaultBatchOptions() BatchOptions {
	return BatchOptions{MaxBatchSize: 10, BatchWaitTimeout: 10 * time.Millisecond, MaxConcurrentBatches: 1}
}

// Validate reports every invalid field, named as in a user_config.
func (o BatchOptions) Validate() error {
	var errs []error
	if o.MaxBatchSize < 1 {
		errs = append(errs, fmt.Errorf("max_batch_size: must be >= 1, got %d", o.MaxBatchSize))
	}
	if o.BatchWaitTimeout < 0 {
		errs = append(errs, fmt.Errorf("batch_wait_timeout: must not be negative, got %s", o.BatchWaitTimeout))
	}
	if o.MaxConcurrentBatches < 1 {
		errs = append(errs, fmt.Errorf("max_concurrent_batches: must be >= 1, got %d", o.MaxConcurrentBatches))
	}
	return errors.Join(errs...)
}

// UnmarshalJSON reads the user_config form. Fields absent from the JSON
// keep the values o had (decode into DefaultBatchOptions() to start from
// Ray's defaults); an unknown field is an error naming it.
func (o *BatchOptions) UnmarshalJSON(b []byte) error {
	var aux struct {
		MaxBatchSize         *int             `json:"max_batch_size"`
		BatchWaitTimeout     *config.Duration `json:"batch_wait_timeout"`
		MaxConcurrentBatches *int             `json:"max_concurrent_batches"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&aux); err != nil {
		return fmt.Errorf("batch options: %w", err)
	}
	if aux.MaxBatchSize != nil {
		o.MaxBatchSize = *aux.MaxBatchSize
	}
	if aux.BatchWaitTimeout != nil {
		o.BatchWaitTimeout = aux.BatchWaitTimeout.D()
	}
	if aux.MaxConcurrentBatches != nil {
		o.MaxConcurrentBatches = *aux.MaxConcurrentBatches
	}
	return nil
}

// MarshalJSON writes the user_config form.
func (o BatchOptions) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		MaxBatchSize         int             `json:"max_batch_size"`
		BatchWaitTimeout     config.Duration `json:"batch_wait_timeout"`
		MaxConcurrentBatches int             `json:"max_concurrent_batches"`
	}{o.MaxBatchSize, config.Duration(o.BatchWaitTimeout), o.MaxConcurrentBatches})
}

// BatchFunc handles a batch: it returns one output per input, in order.
// Its context ends when every caller in the batch has gone (each caller's
// context ended); it carries the first caller's values (logger, request
// id).
//
// An error fails every caller in the batch, unless it is a BatchErrors of
// the batch's length: then caller i gets out[i] or the error at i.
type BatchFunc[In, Out any] func(ctx context.Context, in []In) ([]Out, error)

// BatchErrors is a per-input error list a BatchFunc may return: nil
// entries succeeded (their output is used), the others fail only their
// own caller.
type BatchErrors []error

func (e BatchErrors) Error() string {
	var msgs []string
	for i, err := range e {
		if err != nil {
			msgs = append(msgs, fmt.Sprintf("input %d: %v", i, err))
		}
	}
	return "batch: " + strings.Join(msgs, "; ")
}

// ErrBatcherClosed is returned by Do after Close.
var ErrBatcherClosed = errors.New("batcher is closed")

// BatcherOption configures a Batcher at construction.
type BatcherOption func(*batcherSettings)

type batcherSettings struct {
	size, exec prometheus.Observer
}

// WithBatchMetrics records each batch's size (jetserve_actual_batch_size)
// and execution time on m's series, labelled batcher=name. A nil m (the
// in-process backend) records nothing.
func WithBatchMetrics(m *ReplicaMetrics, name string) BatcherOption {
	return func(s *batcherSettings) { s.size, s.exec = m.batchObservers(name) }
}

// Batcher gathers concurrent single calls (Do) into batches for one batch
// function, as Ray Serve's @serve.batch: a batch runs when it holds
// MaxBatchSize inputs or BatchWaitTimeout after its first input arrived,
// whichever comes first, and at most MaxConcurrentBatches run at once.
// Each caller gets its own result or error; a caller whose context ends
// returns at once and is dropped from a batch that has not started.
//
// Concurrency: Do, SetOptions and Options are safe for concurrent use. The
// Batcher owns one goroutine (started by NewBatcher) and one per running
// batch; Close ends them all. A deployment that makes a Batcher closes it
// in its Close.
type Batcher[In, Out any] struct {
	fn         BatchFunc[In, Out]
	size, exec prometheus.Observer // nil: not recorded

	in      chan *batchItem[In, Out] // unbuffered: received by run only
	changed chan struct{}            // options changed (capacity 1)
	closing chan struct{}            // closed by Close
	once    sync.Once
	done    chan struct{} // closed when run and every batch returned

	waiting atomic.Int64 // inputs queued for a batch (run's queue length)

	mu   sync.Mutex
	opts BatchOptions // guarded by mu
}

type batchItem[In, Out any] struct {
	ctx context.Context
	in  In
	at  time.Time             // when run received it
	res chan batchResult[Out] // capacity 1: a caller that left never blocks a batch
}

type batchResult[Out any] struct {
	out Out
	err error
}

// NewBatcher validates opts and starts a Batcher for fn.
func NewBatcher[In, Out any](fn BatchFunc[In, Out], opts BatchOptions, options ...BatcherOption) (*Batcher[In, Out], error) {
	if fn == nil {
		return nil, errors.New("new batcher: a batch function is required")
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("new batcher: %w", err)
	}
	var s batcherSettings
	for _, o := range options {
		o(&s)
	}
	b := &Batcher[In, Out]{
		fn: fn, size: s.size, exec: s.exec, opts: opts,
		in:      make(chan *batchItem[In, Out]),
		changed: make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go b.run()
	return b, nil
}

// Waiting returns how many inputs wait for a batch to start.
func (b *Batcher[In, Out]) Waiting() int { return int(b.waiting.Load()) }

// Options returns the options in force.
func (b *Batcher[In, Out]) Options() BatchOptions {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opts
}

// SetOptions changes the options in place (what a Reconfigure from
// user_config calls); the next batch formed uses them, and inputs already
// waiting are re-examined at once. Invalid options change nothing.
func (b *Batcher[In, Out]) SetOptions(opts BatchOptions) error {
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("batch options: %w", err)
	}
	b.mu.Lock()
	b.opts = opts
	b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return nil
}

// Do adds in to the next batch and returns its output, or the batch's
// error for it; ctx's error when ctx ends first; ErrBatcherClosed after
// Close.
func (b *Batcher[In, Out]) Do(ctx context.Context, in In) (Out, error) {
	var zero Out
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	it := &batchItem[In, Out]{ctx: ctx, in: in, res: make(chan batchResult[Out], 1)}
	select {
	case b.in <- it:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-b.closing:
		return zero, ErrBatcherClosed
	}
	select {
	case r := <-it.res:
		return r.out, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Close stops taking inputs (Do returns ErrBatcherClosed), runs the
// inputs already waiting, and returns when every batch has returned.
// Calling it again waits the same way.
func (b *Batcher[In, Out]) Close() {
	b.once.Do(func() { close(b.closing) })
	<-b.done
}

// run forms batches and starts them; it is the only reader of b.in.
func (b *Batcher[In, Out]) run() {
	defer close(b.done)
	var queue []*batchItem[In, Out]
	running := 0
	finished := make(chan struct{})
	closing := b.closing // nil once closed
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		opts := b.Options()
		queue = live(queue)
		b.waiting.Store(int64(len(queue)))
		var wake <-chan time.Time
		if len(queue) > 0 && running < opts.MaxConcurrentBatches {
			wait := time.Until(queue[0].at.Add(opts.BatchWaitTimeout))
			if len(queue) >= opts.MaxBatchSize || wait <= 0 || closing == nil {
				n := min(len(queue), opts.MaxBatchSize)
				batch := append([]*batchItem[In, Out](nil), queue[:n]...)
				queue = append(queue[:0], queue[n:]...)
				running++
				go b.runBatch(batch, finished)
				continue
			}
			timer.Reset(wait)
			wake = timer.C
		}
		if closing == nil && len(queue) == 0 {
			for ; running > 0; running-- {
				<-finished
			}
			return
		}
		in := b.in
		if closing == nil {
			in = nil
		}
		select {
		case it := <-in:
			it.at = time.Now()
			queue = append(queue, it)
		case <-finished:
			running--
		case <-wake:
		case <-b.changed:
		case <-closing:
			closing = nil
		}
		timer.Stop()
	}
}

// live drops the inputs whose callers have gone, in place.
func live[In, Out any](q []*batchItem[In, Out]) []*batchItem[In, Out] {
	out := q[:0]
	for _, it := range q {
		if it.ctx.Err() == nil {
			out = append(out, it)
		}
	}
	clear(q[len(out):])
	return out
}

// runBatch calls the batch function and answers every caller; it tells
// run on finished when it is done.
func (b *Batcher[In, Out]) runBatch(items []*batchItem[In, Out], finished chan<- struct{}) {
	defer func() { finished <- struct{}{} }()
	n := len(items)
	ins := make([]In, n)
	for i, it := range items {
		ins[i] = it.in
	}
	// The batch's context ends when its last caller has gone.
	ctx, cancel := context.WithCancel(context.WithoutCancel(items[0].ctx))
	defer cancel()
	var waiting atomic.Int32
	waiting.Store(int32(n))
	for _, it := range items {
		stop := context.AfterFunc(it.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	if b.size != nil {
		b.size.Observe(float64(n))
	}
	start := time.Now()
	outs, err := b.call(ctx, ins)
	if b.exec != nil {
		b.exec.Observe(time.Since(start).Seconds())
	}
	var perInput BatchErrors
	if err != nil && (!errors.As(err, &perInput) || len(perInput) != n) {
		perInput = nil
	}
	var mismatch error
	if len(outs) != n && (err == nil || perInput != nil) {
		mismatch = fmt.Errorf("batch function returned %d results for %d inputs", len(outs), n)
	}
	for i, it := range items {
		var r batchResult[Out]
		switch {
		case perInput != nil && perInput[i] != nil:
			r.err = perInput[i]
		case err != nil && perInput == nil:
			r.err = err
		case mismatch != nil:
			r.err = mismatch
		default:
			r.out = outs[i]
		}
		it.res <- r
	}
}

// call runs the batch function; a panic is an error for every caller.
func (b *Batcher[In, Out]) call(ctx context.Context, ins []In) (outs []Out, err error) {
	defer panics.Recover("batch function", &err)
	return b.fn(ctx, ins)
}
