package serve

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/panics"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
)

// ModelID returns the request's multiplexed model id: its
// serve_multiplexed_model_id header (Ray Serve's; over NATS
// protocol.HdrModelID), "" when it has none. The ingress sets it to the
// model name of an Open Inference Protocol request.
func ModelID(req *Request) string { return req.Header.Get(protocol.HeaderModelID) }

// SetModelID sets the request's multiplexed model id, so that routers
// send it to a replica that holds the model (see Handle.WithModel).
func SetModelID(req *Request, id string) {
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set(protocol.HeaderModelID, id)
}

// unloadTimeout bounds the Close of an evicted model.
const unloadTimeout = 30 * time.Second

// LoadFunc loads one model of a multiplexed deployment; ctx bounds the load.
type LoadFunc[M any] func(ctx context.Context, modelID string) (M, error)

// Multiplexer keeps the models of one replica of a multiplexed deployment
// loaded, as Ray Serve's @serve.multiplexed: at most
// Init.MaxModelsPerReplica (the deployment's max_models_per_replica), least
// recently used evicted first. Concurrent Gets of one id share one load.
// An evicted model that implements Closer or io.Closer is closed once the
// last Get holding it has released it. The replica reports the ids held
// (loaded or loading) with its load reports, and routers prefer a replica
// that holds a request's model.
//
// Concurrency: every method is safe for concurrent use. Loads run on the
// goroutine of the Get that started them; Multiplexer starts none.
type Multiplexer[M any] struct {
	load    LoadFunc[M]
	max     int
	metrics *ReplicaMetrics // nil: none
	report  func(ids []string)
	log     zerolog.Logger

	mu      sync.Mutex
	entries map[string]*list.Element // guarded by mu: id → element of lru
	lru     *list.List               // guarded by mu: *modelEntry[M], most recent first
	closed  bool                     // guarded by mu
}

type modelEntry[M any] struct {
	id    string
	ready chan struct{} // closed when the load ended; model and err are set then
	model M
	err   error
	users int  // guarded by the Multiplexer's mu: Gets not yet released
	gone  bool // guarded by mu: evicted (out of entries and lru); closed when users is 0
}

// ErrMultiplexerClosed is returned by Get after Close.
var ErrMultiplexerClosed = errors.New("multiplexer is closed")

// NewMultiplexer returns a Multiplexer of the replica init describes,
// loading models with load.
func NewMultiplexer[M any](init Init, load LoadFunc[M]) *Multiplexer[M] {
	n := init.MaxModelsPerReplica
	if n <= 0 {
		n = config.DefaultMaxModelsPerReplica
	}
	return &Multiplexer[M]{
		load: load, max: n, metrics: init.Metrics, report: init.ReportModels, log: init.Logger,
		entries: map[string]*list.Element{}, lru: list.New(),
	}
}

// Capacity returns how many models the multiplexer keeps loaded.
func (m *Multiplexer[M]) Capacity() int { return m.max }

// Get returns the model id, loading it first if this replica does not
// hold it, and marks it most recently used. Call release when done with
// the model: an evicted model is closed only after that. A load that fails
// is not cached (the next Get tries again); a Get whose ctx ends while it
// waits returns ctx's error, and a load started by a Get whose ctx ended
// fails for it, not for the other Gets waiting (they load again).
func (m *Multiplexer[M]) Get(ctx context.Context, id string) (model M, release func(), err error) {
	var zero M
	if id == "" {
		return zero, nil, &Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest,
			Msg: "no model id: set the " + protocol.HeaderModelID + " header"}
	}
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return zero, nil, ErrMultiplexerClosed
		}
		if el, ok := m.entries[id]; ok {
			e := el.Value.(*modelEntry[M])
			m.lru.MoveToFront(el)
			e.users++
			m.mu.Unlock()
			select {
			case <-e.ready:
			case <-ctx.Done():
				m.release(e)
				return zero, nil, ctx.Err()
			}
			if e.err != nil {
				m.release(e)
				if isContextErr(e.err) && ctx.Err() == nil {
					continue // the Get that loaded it left: load it for us
				}
				return zero, nil, e.err
			}
			return e.model, m.releaser(e), nil
		}
		e := &modelEntry[M]{id: id, ready: make(chan struct{}), users: 1}
		m.entries[id] = m.lru.PushFront(e)
		evicted := m.trimLocked()
		m.reportLocked()
		m.mu.Unlock()
		m.unload(evicted)
		return m.loadEntry(ctx, e)
	}
}

// loadEntry runs the load of e (a new entry the caller holds).
func (m *Multiplexer[M]) loadEntry(ctx context.Context, e *modelEntry[M]) (M, func(), error) {
	start := time.Now()
	model, err := m.safeLoad(ctx, e.id)
	if err != nil {
		err = fmt.Errorf("load model %q: %w", e.id, err)
	}
	m.mu.Lock()
	e.model, e.err = model, err
	close(e.ready)
	if err != nil {
		m.removeLocked(e)
		e.users--
	} else {
		m.metrics.modelLoaded(time.Since(start))
	}
	var evicted []*modelEntry[M]
	if m.closed && err == nil {
		// Closed while loading: nobody else will ask for it.
		m.removeLocked(e)
		e.gone = true
		m.metrics.modelUnloaded()
	} else {
		evicted = m.trimLocked() // loads that ran together may exceed the cap now
	}
	m.reportLocked()
	m.mu.Unlock()
	m.unload(evicted)
	if err != nil {
		var zero M
		return zero, nil, err
	}
	return model, m.releaser(e), nil
}

func (m *Multiplexer[M]) safeLoad(ctx context.Context, id string) (model M, err error) {
	defer panics.Recover("load", &err)
	return m.load(ctx, id)
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// trimLocked evicts the least recently used loaded models while more than
// max are held (loading models count but are never evicted) and returns
// those to close now (unused). m.mu held.
func (m *Multiplexer[M]) trimLocked() (unused []*modelEntry[M]) {
	for el := m.lru.Back(); el != nil && m.lru.Len() > m.max; {
		e := el.Value.(*modelEntry[M])
		prev := el.Prev()
		select {
		case <-e.ready:
			m.removeLocked(e)
			e.gone = true
			m.metrics.modelUnloaded()
			m.log.Info().Str("model_id", e.id).Msg("multiplexed model evicted")
			if e.users == 0 {
				unused = append(unused, e)
			}
		default: // still loading
		}
		el = prev
	}
	return unused
}

// removeLocked takes e out of the table and the LRU list. m.mu held.
func (m *Multiplexer[M]) removeLocked(e *modelEntry[M]) {
	if el, ok := m.entries[e.id]; ok && el.Value.(*modelEntry[M]) == e {
		m.lru.Remove(el)
		delete(m.entries, e.id)
	}
}

// reportLocked tells the replica the ids held (sorted) and updates the
// gauge of loaded models. m.mu held, so reports arrive in order.
func (m *Multiplexer[M]) reportLocked() {
	ids := make([]string, 0, len(m.entries))
	loaded := 0
	for id, el := range m.entries {
		ids = append(ids, id)
		select {
		case <-el.Value.(*modelEntry[M]).ready:
			loaded++
		default:
		}
	}
	m.metrics.modelsHeld(loaded)
	if m.report != nil {
		sort.Strings(ids)
		m.report(ids)
	}
}

// releaser returns the release func of one Get of e (idempotent).
func (m *Multiplexer[M]) releaser(e *modelEntry[M]) func() {
	var once sync.Once
	return func() { once.Do(func() { m.release(e) }) }
}

func (m *Multiplexer[M]) release(e *modelEntry[M]) {
	m.mu.Lock()
	e.users--
	last := e.gone && e.users == 0 && e.err == nil
	m.mu.Unlock()
	if last {
		m.unload([]*modelEntry[M]{e})
	}
}

// unload closes evicted models.
func (m *Multiplexer[M]) unload(es []*modelEntry[M]) {
	for _, e := range es {
		if err := closeModel(e.model); err != nil {
			m.log.Warn().Err(err).Str("model_id", e.id).Msg("close evicted model")
		}
	}
}

func closeModel(model any) error {
	switch c := model.(type) {
	case Closer:
		ctx, cancel := context.WithTimeout(context.Background(), unloadTimeout)
		defer cancel()
		return c.Close(ctx)
	case io.Closer:
		return c.Close()
	}
	return nil
}

// Close evicts every model: those not in use are closed now, the others
// when released; loads in flight are closed when they end. Get returns
// ErrMultiplexerClosed afterwards. It returns the close errors.
func (m *Multiplexer[M]) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var unused []*modelEntry[M]
	for el := m.lru.Front(); el != nil; {
		next := el.Next()
		e := el.Value.(*modelEntry[M])
		select {
		case <-e.ready:
			m.removeLocked(e)
			e.gone = true
			m.metrics.modelUnloaded()
			if e.users == 0 {
				unused = append(unused, e)
			}
		default: // loadEntry evicts it when its load ends
		}
		el = next
	}
	m.reportLocked()
	m.mu.Unlock()
	var errs []error
	for _, e := range unused {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("close models: %w", err))
			break
		}
		if err := closeModel(e.model); err != nil {
			errs = append(errs, fmt.Errorf("close model %q: %w", e.id, err))
		}
	}
	return errors.Join(errs...)
}
