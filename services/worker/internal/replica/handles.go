package replica

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
)

// handleCheck is a constructor's serve.Init.CheckDeployment: it checks
// the deployment names handles are taken to against the application's
// deployments in the applied config (Params.Deployments) and, when the
// deployment declares its edges (uses, Params.Uses), against those; it
// remembers the unknown and undeclared ones taken while the constructor
// runs. When it cannot tell (no Deployments, no config, the application
// absent from it, NATS unreachable) every name passes: a replica is never
// failed on a guess.
type handleCheck struct {
	r   *Replica
	app string
	dep string

	mu           sync.Mutex
	names        []string // guarded by mu: the app's deployments, as last read
	uses         []string // guarded by mu: the deployment's uses, as last read (nil: not declared)
	read         bool     // guarded by mu: names were read
	constructing bool     // guarded by mu
	unknown      []string // guarded by mu: unknown names taken while constructing
	undeclared   []string // guarded by mu: names not in uses taken while constructing
}

func (r *Replica) handleCheck(app, deployment string) *handleCheck {
	return &handleCheck{r: r, app: app, dep: deployment, constructing: true}
}

// deployment is nil when name is a deployment of the app (or nothing can
// tell), else a 404 *serve.Error naming it.
func (c *handleCheck) deployment(name string) error {
	if c.r.p.Deployments == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for fresh := false; ; fresh = true {
		if !c.read || fresh {
			ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
			names, ok := c.r.p.Deployments(ctx, c.app)
			var uses []string
			if ok && c.r.p.Uses != nil {
				uses, _ = c.r.p.Uses(ctx, c.app, c.dep)
			}
			cancel()
			if !ok {
				return nil
			}
			c.names, c.uses, c.read = names, uses, true
		}
		if slices.Contains(c.names, name) {
			return c.declaredLocked(name)
		}
		if fresh {
			break // the config as it is now does not have it either
		}
	}
	if c.constructing && !slices.Contains(c.unknown, name) {
		c.unknown = append(c.unknown, name)
	}
	return &serve.Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound, Msg: serve.UnknownDeployment(c.app, name, c.names)}
}

// declaredLocked is nil when the deployment declares no uses or lists
// name in them, else a 404 *serve.Error naming both.
func (c *handleCheck) declaredLocked(name string) error {
	if len(c.uses) == 0 || slices.Contains(c.uses, name) {
		return nil
	}
	if c.constructing && !slices.Contains(c.undeclared, name) {
		c.undeclared = append(c.undeclared, name)
	}
	return &serve.Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound, Msg: serve.UndeclaredHandle(c.dep, name, c.uses)}
}

// done ends the construction: the error naming the unknown deployments
// the constructor took handles to, and those its uses do not list; nil if
// none.
func (c *handleCheck) done() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.constructing = false
	var errs []error
	if len(c.unknown) > 0 {
		errs = append(errs, serve.HandleError(c.app, c.unknown, c.names))
	}
	if len(c.undeclared) > 0 {
		errs = append(errs, serve.EdgesError(c.dep, c.undeclared, c.uses))
	}
	return errors.Join(errs...)
}
