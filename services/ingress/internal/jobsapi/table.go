package jobsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Method is one async method as the ingress serves it.
type Method struct {
	App, Deployment string
	// Config is the effective config: the serve config's async_methods of
	// the deployment merged over the SDK defaults workers advertise.
	Config config.AsyncMethod
}

// Table maps (app, method name) to the method. It is immutable and safe
// for concurrent use.
type Table struct {
	apps map[string]map[string]Method
}

// Lookup returns app's async method name.
func (t *Table) Lookup(app, name string) (Method, bool) {
	if t == nil {
		return Method{}, false
	}
	m, ok := t.apps[app][name]
	return m, ok
}

// Len is the number of methods.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	n := 0
	for _, ms := range t.apps {
		n += len(ms)
	}
	return n
}

// BuildTable computes the async methods of every deployment of sc: the
// deployment's async_methods merged over sdk[handler] (the SDK defaults;
// serve.EffectiveAsync). A deployment whose handler no worker advertises
// still gets the methods its config names. If two deployments of an app
// declare the same method, the first one wins (config.Parse rejects that
// for configured ones).
func BuildTable(sc config.ServeConfig, sdk map[string][]config.AsyncMethod) *Table {
	t := &Table{apps: map[string]map[string]Method{}}
	for _, a := range sc.Applications {
		for _, d := range a.Deployments {
			for _, m := range serve.EffectiveAsync(sdk[d.Handler], d.AsyncMethods) {
				if t.apps[a.Name] == nil {
					t.apps[a.Name] = map[string]Method{}
				}
				if _, dup := t.apps[a.Name][m.Name]; !dup {
					t.apps[a.Name][m.Name] = Method{App: a.Name, Deployment: d.Name, Config: m}
				}
			}
		}
	}
	return t
}

// Watcher keeps a Table in step with the Apps bucket key "config" and the
// SDK defaults workers advertise in the Workers bucket. A handler's
// defaults are kept after its workers go away (the last advertised ones),
// so that jobs can still be submitted while no worker runs.
type Watcher struct {
	table         atomic.Pointer[Table]
	configLoaded  atomic.Bool
	workersLoaded atomic.Bool
	log           zerolog.Logger

	mu  sync.Mutex
	sc  config.ServeConfig              // guarded by mu
	sdk map[string][]config.AsyncMethod // guarded by mu
	key string                          // guarded by mu: JSON of what the table was built from
}

// NewWatcher returns a watcher with an empty table.
func NewWatcher(log zerolog.Logger) *Watcher {
	w := &Watcher{log: log, sdk: map[string][]config.AsyncMethod{}}
	w.table.Store(BuildTable(config.ServeConfig{}, nil))
	return w
}

// Ready reports whether both buckets' initial values have been read.
func (w *Watcher) Ready() error {
	if !w.configLoaded.Load() || !w.workersLoaded.Load() {
		return errors.New("async method table not loaded")
	}
	return nil
}

// Table returns the current table.
func (w *Watcher) Table() *Table { return w.table.Load() }

// SetConfig replaces the serve config (nil: deleted).
func (w *Watcher) SetConfig(sc config.ServeConfig) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sc = sc
	w.rebuildLocked()
}

// SetWorker records the SDK defaults one worker advertises.
func (w *Watcher) SetWorker(info protocol.WorkerInfo) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for h, ms := range info.Async {
		w.sdk[h] = slices.Clone(ms)
	}
	w.rebuildLocked()
}

func (w *Watcher) rebuildLocked() {
	key, _ := json.Marshal(struct {
		SC  config.ServeConfig
		SDK map[string][]config.AsyncMethod
	}{w.sc, w.sdk})
	if string(key) == w.key {
		return
	}
	w.key = string(key)
	t := BuildTable(w.sc, w.sdk)
	w.table.Store(t)
	w.log.Debug().Int("async_methods", t.Len()).Msg("async method table updated")
}

// Run follows both buckets until ctx ends.
func (w *Watcher) Run(ctx context.Context, apps, workers jetstream.KeyValue) error {
	cw, err := apps.Watch(ctx, fleetstate.ConfigKey)
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	defer cw.Stop() //nolint:errcheck // best effort on the way out
	ww, err := workers.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch workers: %w", err)
	}
	defer ww.Stop() //nolint:errcheck // best effort on the way out
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-cw.Updates():
			if !ok {
				return errors.New("watch config: watcher closed")
			}
			if e == nil {
				w.configLoaded.Store(true)
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				w.SetConfig(config.ServeConfig{})
				continue
			}
			var sc config.ServeConfig
			if err := json.Unmarshal(e.Value(), &sc); err != nil {
				w.log.Warn().Err(err).Uint64("revision", e.Revision()).Msg("bad serve config in apps bucket")
				continue
			}
			w.SetConfig(sc)
		case e, ok := <-ww.Updates():
			if !ok {
				return errors.New("watch workers: watcher closed")
			}
			if e == nil {
				w.workersLoaded.Store(true)
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var info protocol.WorkerInfo
			if err := json.Unmarshal(e.Value(), &info); err != nil {
				w.log.Warn().Err(err).Str("key", e.Key()).Msg("bad worker info")
				continue
			}
			w.SetWorker(info)
		}
	}
}
