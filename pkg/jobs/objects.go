package jobs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// deleteObject deletes the object name of obj. A Bind queue may not purge
// a stream (a worker's user may not: STREAM.PURGE cannot tell an object
// store's stream from a job stream), and ObjectStore.Delete purges the
// object's chunks; so it writes only the delete marker Delete writes
// first (a rollup of the object's metadata, Deleted set), and the chunks
// expire with the store's TTL (the method's retention).
// jetstream.ErrObjectNotFound if there is no such object.
func (q *Queue) deleteObject(ctx context.Context, obj jetstream.ObjectStore, name string) error {
	if !q.bind {
		return obj.Delete(ctx, name)
	}
	info, err := obj.GetInfo(ctx, name)
	if err != nil {
		return err
	}
	info.Deleted = true
	info.Size, info.Chunks, info.Digest = 0, 0, ""
	info.ModTime = time.Time{}
	data, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode object %s: %w", name, err)
	}
	m := nats.NewMsg("$O." + info.Bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name)))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Data = data
	if _, err := q.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("delete object %s: %w", name, err)
	}
	return nil
}

// putObject stores b as the object name of obj, replacing one of that
// name. ObjectStore.Put purges a replaced object's chunks; a Bind queue
// deletes it first as deleteObject does, so that Put finds it deleted and
// purges nothing.
func (q *Queue) putObject(ctx context.Context, obj jetstream.ObjectStore, name string, b []byte) error {
	if q.bind {
		if err := q.deleteObject(ctx, obj, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return err
		}
	}
	_, err := obj.PutBytes(ctx, name, b)
	return err
}
