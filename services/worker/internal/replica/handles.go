package replica

import (
	"context"
	"net/http"
	"slices"
	"sync"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
)

// handleCheck is a constructor's serve.Init.CheckDeployment: it checks
// the deployment names handles are taken to against the application's
// deployments in the applied config (Params.Deployments) and remembers
// the unknown ones taken while the constructor runs. When it cannot tell
// (no Deployments, no config, the application absent from it, NATS
// unreachable) every name passes: a replica is never failed on a guess.
type handleCheck struct {
	r   *Replica
	app string

	mu           sync.Mutex
	names        []string // guarded by mu: the app's deployments, as last read
	read         bool     // guarded by mu: names were read
	constructing bool     // guarded by mu
	unknown      []string // guarded by mu: unknown names taken while constructing
}

func (r *Replica) handleCheck(app string) *handleCheck {
	return &handleCheck{r: r, app: app, constructing: true}
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
			cancel()
			if !ok {
				return nil
			}
			c.names, c.read = names, true
		}
		if slices.Contains(c.names, name) {
			return nil
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

// done ends the construction: the error naming the unknown deployments
// the constructor took handles to, nil if none.
func (c *handleCheck) done() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.constructing = false
	if len(c.unknown) == 0 {
		return nil
	}
	return serve.HandleError(c.app, c.unknown, c.names)
}
