package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/panics"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
)

// Local runs one application in-process, one instance per deployment, with
// no NATS: handles call deployments directly. It is how an application is
// tested with plain go test, and it behaves like the fleet for callers
// (same Request, Response and Error values). Safe for concurrent use.
type Local struct {
	app       config.Application
	mu        sync.Mutex
	instances map[string]Handler // guarded by mu; built lazily on first call
	reg       *Registry
	log       zerolog.Logger
	ctx       context.Context
}

// NewLocal prepares app to run in-process from the constructors in reg.
// Deployments are constructed on their first call (so constructors may
// take handles to each other freely).
func NewLocal(ctx context.Context, reg *Registry, app config.Application, log zerolog.Logger) (*Local, error) {
	for _, d := range app.Deployments {
		if _, ok := reg.Lookup(d.Handler); !ok {
			return nil, fmt.Errorf("deployment %s: handler %q is not registered", d.Name, d.Handler)
		}
	}
	return &Local{app: app, instances: map[string]Handler{}, reg: reg, log: log, ctx: ctx}, nil
}

// Ingress returns a handle to the application's ingress deployment.
func (l *Local) Ingress() *Handle { return NewHandle(l, l.app.Name, l.app.Ingress) }

func (l *Local) instance(deployment string) (Handler, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h, ok := l.instances[deployment]; ok {
		return h, nil
	}
	d, ok := l.app.Deployment(deployment)
	if !ok {
		return nil, &Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound, Msg: "no deployment " + quote(deployment) + " in application " + quote(l.app.Name)}
	}
	ctor, _ := l.reg.Lookup(d.Handler)
	h, err := ctor(l.ctx, Init{App: l.app.Name, Deployment: d.Name, ReplicaID: d.Name + "-local",
		UserConfig: d.UserConfig, Logger: l.log.With().Str("deployment", d.Name).Logger(), Caller: l,
		MaxModelsPerReplica: d.MaxModelsPerReplica})
	if err != nil {
		return nil, fmt.Errorf("construct %s: %w", d.Name, err)
	}
	l.instances[deployment] = h
	return h, nil
}

// Call implements Caller by calling the deployment's handler directly.
func (l *Local) Call(ctx context.Context, app, deployment string, req *Request) (*Response, error) {
	if app != l.app.Name {
		return nil, &Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound, Msg: "no application " + quote(app)}
	}
	h, err := l.instance(deployment)
	if err != nil {
		return nil, err
	}
	resp, err := serveLocal(ctx, h, req)
	if err != nil {
		e := AsError(err)
		if pe := (*panics.Error)(nil); errors.As(err, &pe) { // as a replica answers a panic
			e = &Error{Status: http.StatusInternalServerError, Code: protocol.ErrInternal, Msg: err.Error()}
		}
		return &Response{Status: e.Status, Header: http.Header{protocol.HdrError: {string(e.Code)}}, Body: []byte(e.Msg)}, nil
	}
	if resp.Status == 0 {
		resp.Status = http.StatusOK
	}
	return resp, nil
}

// serveLocal runs the handler; a panic is a *panics.Error.
func serveLocal(ctx context.Context, h Handler, req *Request) (resp *Response, err error) {
	defer panics.Recover("handler", &err)
	return h.ServeRequest(ctx, req)
}

// Close closes every constructed deployment that implements Closer.
func (l *Local) Close(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for name, h := range l.instances {
		if c, ok := h.(Closer); ok {
			if err := c.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}
