package fleetstate

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// AsyncMethod is one async method of a deployment of the applied config.
type AsyncMethod struct {
	App, Deployment string
	// Config is the effective config: the deployment's async_methods
	// merged field by field over the SDK defaults its handler declares,
	// platform defaults filled in (serve.EffectiveAsync).
	Config config.AsyncMethod
}

// SDKDefaults are the async methods each handler's code declares with its
// SDK defaults, by handler name, as workers record them in the Handlers
// bucket (protocol.HandlerInfo), which outlives the workers: its jobs can
// be submitted, listed and scaled while no worker runs.
type SDKDefaults map[string][]config.AsyncMethod

// Add records one handler's declaration and reports whether anything
// changed.
func (s SDKDefaults) Add(info protocol.HandlerInfo) bool {
	if cur, ok := s[info.Handler]; ok && reflect.DeepEqual(cur, info.Async) {
		return false
	}
	s[info.Handler] = slices.Clone(info.Async)
	return true
}

// AsyncTable is every async method of a serve config. It is immutable and
// safe for concurrent use; a nil table has no methods.
type AsyncTable struct {
	sc      config.ServeConfig
	methods []AsyncMethod
	byApp   map[string]map[string]int // app → method name → index in methods
}

// NewAsyncTable lists the async methods of every deployment of sc (its
// async_methods merged over sdk[handler]). A deployment whose handler no
// worker advertised still gets the methods its config names. If two
// deployments of an app declare the same method, the first one wins
// (config.Parse rejects that for configured ones).
func NewAsyncTable(sc config.ServeConfig, sdk SDKDefaults) *AsyncTable {
	t := &AsyncTable{sc: sc, byApp: map[string]map[string]int{}}
	for _, a := range sc.Applications {
		for _, d := range a.Deployments {
			for _, m := range serve.EffectiveAsync(sdk[d.Handler], d.AsyncMethods) {
				if t.byApp[a.Name] == nil {
					t.byApp[a.Name] = map[string]int{}
				}
				if _, dup := t.byApp[a.Name][m.Name]; dup {
					continue
				}
				t.byApp[a.Name][m.Name] = len(t.methods)
				t.methods = append(t.methods, AsyncMethod{App: a.Name, Deployment: d.Name, Config: m})
			}
		}
	}
	return t
}

// Lookup returns app's async method name.
func (t *AsyncTable) Lookup(app, name string) (AsyncMethod, bool) {
	if t == nil {
		return AsyncMethod{}, false
	}
	i, ok := t.byApp[app][name]
	if !ok {
		return AsyncMethod{}, false
	}
	return t.methods[i], true
}

// Methods returns every method, in the config's order.
func (t *AsyncTable) Methods() []AsyncMethod {
	if t == nil {
		return nil
	}
	return slices.Clone(t.methods)
}

// Of returns the methods of one deployment, in the config's order.
func (t *AsyncTable) Of(app, deployment string) []AsyncMethod {
	if t == nil {
		return nil
	}
	var out []AsyncMethod
	for _, m := range t.methods {
		if m.App == app && m.Deployment == deployment {
			out = append(out, m)
		}
	}
	return out
}

// Len is the number of methods.
func (t *AsyncTable) Len() int {
	if t == nil {
		return 0
	}
	return len(t.methods)
}

// Config is the serve config the table was built from.
func (t *AsyncTable) Config() config.ServeConfig {
	if t == nil {
		return config.ServeConfig{}
	}
	return t.sc
}

// AsyncFollower keeps an AsyncTable in step with the fleet: the applied
// serve config (Apps, ConfigKey) and the SDK defaults workers advertise
// (Handlers), both followed with kvfollow (re-read at once after a NATS
// reconnect). Table, Ready and Changed are safe for concurrent use.
type AsyncFollower struct {
	cfg     *kvfollow.Follower[config.ServeConfig]
	workers *kvfollow.Follower[protocol.HandlerInfo] // the Handlers bucket
	log     zerolog.Logger

	table   atomic.Pointer[AsyncTable]
	changed chan struct{} // capacity 1: coalesces

	mu  sync.Mutex  // guards sdk; held while a table is built and stored
	sdk SDKDefaults // guarded by mu

	hooks ConfigHooks // set before Run
}

// ConfigHooks let a caller derive more from the serve config the follower
// reads (the ingress's route table), in step with the async method table:
// OnConfig gets each config after the table built from it was stored, so
// that nothing derived from a config is newer than the table (a request
// routed by the newer one is never taken for a sync call because the
// table lags); calls are in order. OnSynced is called once the config's
// initial value was read (there may be none).
type ConfigHooks struct {
	OnConfig func(config.ServeConfig)
	OnSynced func()
}

// SetConfigHooks sets h; call it before Run.
func (f *AsyncFollower) SetConfigHooks(h ConfigHooks) { f.hooks = h }

// NewAsyncFollower returns a follower of b's Apps and Handlers buckets on
// nc; Run feeds it.
func NewAsyncFollower(nc *nats.Conn, b *Buckets, log zerolog.Logger) *AsyncFollower {
	f := &AsyncFollower{log: log, changed: make(chan struct{}, 1), sdk: SDKDefaults{}}
	f.table.Store(NewAsyncTable(config.ServeConfig{}, nil))
	f.cfg = kvfollow.New(nc, b.Apps, kvfollow.Options[config.ServeConfig]{
		Keys: []string{ConfigKey}, Log: log,
		OnChange: func(kvfollow.Change[config.ServeConfig]) { f.rebuild(false) },
		OnSync: func() {
			if f.hooks.OnSynced != nil {
				f.hooks.OnSynced()
			}
		},
	})
	f.workers = kvfollow.New(nc, b.Handlers, kvfollow.Options[protocol.HandlerInfo]{
		Log: log,
		OnChange: func(c kvfollow.Change[protocol.HandlerInfo]) {
			if !c.Deleted && c.Value.Handler != "" { // declarations are kept
				f.mu.Lock()
				changed := f.sdk.Add(c.Value)
				f.mu.Unlock()
				if changed { // (rebuilt under mu again: a config change may come between)
					f.rebuild(true)
				}
			}
		},
	})
	return f
}

// rebuild stores a new table from the config and the SDK defaults (under
// mu: the two followers' callbacks never store tables out of order).
func (f *AsyncFollower) rebuild(sdkChanged bool) {
	f.mu.Lock()
	sc, _ := f.cfg.Get(ConfigKey) // none (or deleted): no application
	t := NewAsyncTable(sc, f.sdk)
	f.table.Store(t)
	if !sdkChanged && f.hooks.OnConfig != nil {
		f.hooks.OnConfig(sc)
	}
	f.mu.Unlock()
	f.log.Debug().Int("async_methods", t.Len()).Bool("sdk_changed", sdkChanged).Msg("async method table updated")
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// Run follows both buckets until ctx ends, then returns nil.
func (f *AsyncFollower) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return f.cfg.Run(gctx) })
	g.Go(func() error { return f.workers.Run(gctx) })
	return g.Wait()
}

// Table returns the current table.
func (f *AsyncFollower) Table() *AsyncTable { return f.table.Load() }

// Changed receives a value after the table changed (coalesced).
func (f *AsyncFollower) Changed() <-chan struct{} { return f.changed }

// Ready reports whether both buckets' initial values have been read.
func (f *AsyncFollower) Ready() error {
	for _, ch := range []<-chan struct{}{f.cfg.Ready(), f.workers.Ready()} {
		select {
		case <-ch:
		default:
			return errors.New("async method table not loaded")
		}
	}
	return nil
}
