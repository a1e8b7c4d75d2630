package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ReadAll calls fn with the current value of every key in kv, in no
// particular order; keys deleted while it runs are skipped. It is how a
// newly elected leader reads back what the previous one wrote.
func ReadAll(ctx context.Context, kv jetstream.KeyValue, fn func(key string, value []byte)) error {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list %s: %w", kv.Bucket(), err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s %s: %w", kv.Bucket(), k, err)
		}
		fn(k, e.Value())
	}
	return nil
}
