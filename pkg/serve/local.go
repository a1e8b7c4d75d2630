package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
)

// Local runs one application in-process, one instance per deployment, with
// no NATS: handles call deployments directly. It is how an application is
// tested with plain go test, and it behaves like the fleet for callers —
// the same Request, Response and Error values, the same answers for
// unknown deployments, handler errors and panics, streaming (Stream), a
// changed user_config (Reconfigure), health checks (CheckHealth) and async
// methods run by an in-process job runner (SubmitJob, JobStatus,
// JobResult, CancelJob, WaitJob; see localjobs.go). It does not enforce
// max_ongoing_requests, queueing or the NATS max_payload, and a handler
// receives the caller's request body itself, not a copy.
//
// Safe for concurrent use. Close it when done: it cancels running jobs
// and closes the deployments.
type Local struct {
	app   config.Application
	reg   *Registry
	log   zerolog.Logger
	ctx   context.Context
	deps  map[string]*localDep // by deployment name; fixed by NewLocal
	names []string             // deployment names, in config order
	jobs  *localJobs

	closeOnce sync.Once
	closeErr  error
}

// localDep is one deployment's single instance.
type localDep struct {
	cfg   config.Deployment
	async []config.AsyncMethod // effective async methods

	once sync.Once // the first construction

	mu         sync.RWMutex
	h          Handler         // guarded by mu; nil until constructed
	err        error           // guarded by mu: why construction failed
	userConfig json.RawMessage // guarded by mu: the user_config in force
}

// NewLocal runs app in-process from the constructors in reg: it constructs
// every deployment (in the config's order; a constructor may call another
// deployment through a handle, which is then constructed first — not in a
// cycle) and fails
// with the first error — a handler not registered, a constructor's error,
// a handle to a name that is not a deployment of app or, for a deployment
// that declares its uses, to one they do not list, async methods whose
// handler does not implement JobHandler. ctx is given to the constructors.
func NewLocal(ctx context.Context, reg *Registry, app config.Application, log zerolog.Logger) (*Local, error) {
	l := &Local{app: app, reg: reg, log: log, ctx: ctx, deps: map[string]*localDep{}}
	owner := map[string]string{} // async method → deployment
	for _, d := range app.Deployments {
		if _, ok := reg.Lookup(d.Handler); !ok {
			return nil, fmt.Errorf("deployment %s: handler %q is not registered", d.Name, d.Handler)
		}
		if _, dup := l.deps[d.Name]; dup {
			return nil, fmt.Errorf("deployment %s: the name is used twice", d.Name)
		}
		ld := &localDep{cfg: d, userConfig: d.UserConfig}
		if len(reg.AsyncMethods(d.Handler))+len(d.AsyncMethods) > 0 {
			ld.async = EffectiveAsync(reg.AsyncMethods(d.Handler), d.AsyncMethods)
		}
		for _, m := range ld.async {
			if other, dup := owner[m.Name]; dup {
				return nil, fmt.Errorf("async method %q is declared by deployments %s and %s", m.Name, other, d.Name)
			}
			owner[m.Name] = d.Name
		}
		l.deps[d.Name] = ld
		l.names = append(l.names, d.Name)
	}
	for _, name := range l.names {
		h, err := l.handler(name)
		if err == nil && needsJobHandler(l.deps[name].async) {
			if _, ok := h.(JobHandler); !ok {
				err = fmt.Errorf("deployment %s has async methods but its handler %T does not implement serve.JobHandler", name, h)
			}
		}
		if err != nil {
			_ = l.closeDeployments(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	l.jobs = newLocalJobs(l)
	return l, nil
}

// Ingress returns a handle to the application's ingress deployment.
func (l *Local) Ingress() *Handle { return l.Handle(l.app.Ingress) }

// Handle returns a handle to a deployment of the application; one to a
// name that is not fails every call with 404 not_found.
func (l *Local) Handle(deployment string) *Handle {
	h := NewHandle(l, l.app.Name, deployment)
	h.err = l.checkDeployment(deployment)
	return h
}

// checkDeployment is Init.CheckDeployment for app's deployments.
func (l *Local) checkDeployment(name string) error {
	if _, ok := l.deps[name]; ok {
		return nil
	}
	return &Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound, Msg: UnknownDeployment(l.app.Name, name, l.names)}
}

// UnknownDeployment is the message for a handle to name, which is not one
// of app's deployments (known).
func UnknownDeployment(app, name string, known []string) string {
	return fmt.Sprintf("no deployment %q in application %q (its deployments: %s)", name, app, strings.Join(known, ", "))
}

// handler returns deployment's instance, constructing it on first use.
func (l *Local) handler(deployment string) (Handler, error) {
	d, ok := l.deps[deployment]
	if !ok {
		return nil, l.checkDeployment(deployment)
	}
	d.once.Do(func() {
		d.mu.RLock()
		uc := d.userConfig
		d.mu.RUnlock()
		h, err := l.construct(d, uc)
		d.mu.Lock()
		d.h, d.err = h, err
		d.mu.Unlock()
	})
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.err != nil {
		return nil, fmt.Errorf("construct %s: %w", deployment, d.err)
	}
	return d.h, nil
}

// construct builds d's handler with userConfig. A handle the constructor
// takes to a name that is not a deployment of the application fails it.
func (l *Local) construct(d *localDep, userConfig json.RawMessage) (h Handler, err error) {
	ctor, _ := l.reg.Lookup(d.cfg.Handler)
	var mu sync.Mutex
	constructing := true
	var unknown, undeclared []string
	init := Init{
		App: l.app.Name, Deployment: d.cfg.Name, ReplicaID: d.cfg.Name + "-local", UserConfig: userConfig,
		Logger: l.log.With().Str("deployment", d.cfg.Name).Logger(), Caller: l,
		MaxModelsPerReplica: d.cfg.MaxModelsPerReplica,
		CheckDeployment: func(name string) error {
			err := l.checkDeployment(name)
			declared := err != nil || len(d.cfg.Uses) == 0 || slices.Contains(d.cfg.Uses, name)
			if !declared {
				err = &Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound, Msg: UndeclaredHandle(d.cfg.Name, name, d.cfg.Uses)}
			}
			mu.Lock()
			switch {
			case !constructing:
			case !declared:
				undeclared = append(undeclared, name)
			case err != nil:
				unknown = append(unknown, name)
			}
			mu.Unlock()
			return err
		},
	}
	func() {
		defer func() {
			if v := recover(); v != nil {
				err = fmt.Errorf("constructor panicked: %v", v)
			}
		}()
		h, err = ctor(l.ctx, init)
	}()
	mu.Lock()
	constructing = false
	mu.Unlock()
	switch {
	case err != nil:
		return nil, err
	case h == nil:
		return nil, errors.New("constructor returned no handler")
	case len(unknown) > 0 || len(undeclared) > 0:
		closeHandler(context.WithoutCancel(l.ctx), h)
		var errs []error
		if len(unknown) > 0 {
			errs = append(errs, HandleError(l.app.Name, unknown, l.names))
		}
		if len(undeclared) > 0 {
			errs = append(errs, EdgesError(d.cfg.Name, undeclared, d.cfg.Uses))
		}
		return nil, errors.Join(errs...)
	}
	return h, nil
}

// HandleError is the error a replica's start fails with when its
// constructor took handles to names (unknown) that are not deployments of
// app (known).
func HandleError(app string, unknown, known []string) error {
	q := make([]string, len(unknown))
	for i, n := range unknown {
		q[i] = fmt.Sprintf("%q", n)
	}
	return fmt.Errorf("handle to unknown deployment %s: application %q has %s", strings.Join(q, ", "), app, strings.Join(known, ", "))
}

func closeHandler(ctx context.Context, h Handler) error {
	if c, ok := h.(Closer); ok {
		return c.Close(ctx)
	}
	return nil
}

// Call implements Caller by calling the deployment's handler directly:
// errors and panics become error responses as in the fleet.
func (l *Local) Call(ctx context.Context, app, deployment string, req *Request) (*Response, error) {
	h, err := l.target(app, deployment)
	if err != nil {
		return nil, err
	}
	resp, err := serveOne(ContextWithRequest(ctx, req), h, req)
	if err != nil {
		return errorResponse(AsError(err)), nil
	}
	if resp == nil {
		resp = &Response{}
	}
	if resp.Status == 0 {
		resp.Status = http.StatusOK
	}
	return resp, nil
}

func (l *Local) target(app, deployment string) (Handler, error) {
	if app != l.app.Name {
		return nil, &Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound, Msg: "no application " + quote(app)}
	}
	return l.handler(deployment)
}

func errorResponse(e *Error) *Response {
	return &Response{Status: e.Status, Header: http.Header{protocol.HdrError: {string(e.Code)},
		"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte(e.Msg)}
}

func serveOne(ctx context.Context, h Handler, req *Request) (resp *Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			resp, err = nil, &Error{Status: http.StatusInternalServerError, Code: protocol.ErrInternal, Msg: fmt.Sprintf("handler panicked: %v", v)}
		}
	}()
	return h.ServeRequest(ctx, req)
}

// Stream implements StreamCaller: a StreamHandler writes its answer to
// sink as it goes; any other deployment's answer is delivered as one
// chunk. An error before the head is returned as an *Error and nothing
// reaches sink; an error after it is returned after the chunks.
func (l *Local) Stream(ctx context.Context, app, deployment string, req *Request, sink StreamSink) error {
	h, err := l.target(app, deployment)
	if err != nil {
		return err
	}
	ctx = ContextWithRequest(ctx, req)
	sh, ok := h.(StreamHandler)
	if !ok {
		resp, err := l.Call(ctx, app, deployment, req)
		if err != nil {
			return err
		}
		if c := resp.Header.Get(protocol.HdrError); c != "" {
			return &Error{Status: resp.Status, Code: protocol.ErrorCode(c), Msg: string(resp.Body)}
		}
		if err := sink.Head(resp.Status, resp.Header); err != nil {
			return err
		}
		if len(resp.Body) > 0 {
			return sink.Chunk(resp.Body)
		}
		return nil
	}
	w := &localWriter{sink: sink}
	err = streamOne(ctx, sh, req, w)
	switch {
	case w.sinkErr != nil:
		return w.sinkErr
	case err != nil && !w.headed:
		return AsError(err)
	case !w.headed:
		if herr := w.WriteHead(http.StatusOK, nil); herr != nil {
			return herr
		}
	}
	if err != nil {
		return AsError(err)
	}
	return nil
}

func streamOne(ctx context.Context, sh StreamHandler, req *Request, w StreamWriter) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &Error{Status: http.StatusInternalServerError, Code: protocol.ErrInternal, Msg: fmt.Sprintf("handler panicked: %v", v)}
		}
	}()
	return sh.ServeStream(ctx, req, w)
}

// localWriter is the StreamWriter a StreamHandler gets in-process.
type localWriter struct {
	sink    StreamSink
	mu      sync.Mutex
	headed  bool  // guarded by mu
	sinkErr error // guarded by mu: the sink refused; everything after fails with it
}

func (w *localWriter) WriteHead(status int, h http.Header) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.headLocked(status, h)
}

func (w *localWriter) headLocked(status int, h http.Header) error {
	if w.sinkErr != nil || w.headed {
		return w.sinkErr
	}
	w.headed = true
	if err := w.sink.Head(status, h); err != nil {
		w.sinkErr = err
	}
	return w.sinkErr
}

func (w *localWriter) Write(chunk []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.headLocked(http.StatusOK, nil); err != nil {
		return err
	}
	if err := w.sink.Chunk(chunk); err != nil {
		w.sinkErr = err
	}
	return w.sinkErr
}

// Reconfigure applies a changed user_config to deployment as the fleet
// does: in place through the handler's Reconfigure when it has one, else
// by constructing the deployment anew with it (the old instance is then
// closed). An error leaves the deployment as it was.
func (l *Local) Reconfigure(ctx context.Context, deployment string, userConfig json.RawMessage) error {
	h, err := l.handler(deployment)
	if err != nil {
		return err
	}
	d := l.deps[deployment]
	if rc, ok := h.(Reconfigurer); ok {
		if err := rc.Reconfigure(ctx, userConfig); err != nil {
			return fmt.Errorf("reconfigure %s: %w", deployment, err)
		}
		d.mu.Lock()
		d.userConfig = userConfig
		d.mu.Unlock()
		return nil
	}
	nh, err := l.construct(d, userConfig)
	if err != nil {
		return fmt.Errorf("reconfigure %s: construct: %w", deployment, err)
	}
	d.mu.Lock()
	old := d.h
	d.h, d.userConfig = nh, userConfig
	d.mu.Unlock()
	if err := closeHandler(ctx, old); err != nil {
		l.log.Warn().Err(err).Str("deployment", deployment).Msg("close the instance replaced by Reconfigure")
	}
	return nil
}

// CheckHealth runs deployment's health check (HealthChecker; none is
// healthy), bounded by its health_check_timeout (default 30s). A panic
// is a failure.
func (l *Local) CheckHealth(ctx context.Context, deployment string) (err error) {
	h, err := l.handler(deployment)
	if err != nil {
		return err
	}
	hc, ok := h.(HealthChecker)
	if !ok {
		return nil
	}
	timeout := l.deps[deployment].cfg.HealthCheckTimeout.D()
	if timeout <= 0 {
		timeout = config.DefaultHealthCheckTimeout.D()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("health check of %s panicked: %v", deployment, v)
		}
	}()
	if err := hc.CheckHealth(ctx); err != nil {
		return fmt.Errorf("health check of %s: %w", deployment, err)
	}
	return nil
}

// Close cancels the running jobs and waits for them (bounded by ctx),
// then closes every deployment that implements Closer. Calls after the
// first return its result.
func (l *Local) Close(ctx context.Context) error {
	l.closeOnce.Do(func() {
		var errs []error
		if l.jobs != nil {
			errs = append(errs, l.jobs.close(ctx))
		}
		errs = append(errs, l.closeDeployments(ctx))
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

func (l *Local) closeDeployments(ctx context.Context) error {
	var errs []error
	for _, name := range l.names {
		d := l.deps[name]
		d.once.Do(func() {}) // never constructed after Close
		d.mu.Lock()
		h := d.h
		d.h, d.err = nil, errors.New("closed")
		d.mu.Unlock()
		if h == nil {
			continue
		}
		if err := closeHandler(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
