package service

import (
	"context"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/nats-io/nats.go/jetstream"
)

// ReadAll is fleetstate.ReadAll (kept for the scheduler's reconcile
// package until it moves there).
func ReadAll(ctx context.Context, kv jetstream.KeyValue, fn func(key string, value []byte)) error {
	return fleetstate.ReadAll(ctx, kv, fn)
}
