package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Large bodies.
//
// A request or response body larger than one NATS message travels through
// the bodies object store (protocol.Names.BucketBodies): the sender streams
// it into an object named by a fresh nuid (chunked by the object store, so
// a stock server's 1 MiB max_payload is no limit) and sends the message
// with an empty body and protocol.HeaderBodyObject naming the object; the
// receiver reads it and deletes it. The ingress streams a request body from
// the client into the store and a response body from the store to the
// client, so that it never holds a whole large body; a replica reads the
// request body into the one buffer its handler gets. Objects nobody deleted
// (a crashed reader) expire after BodiesTTL.

// BodiesTTL is how long an unread body object is kept.
const BodiesTTL = fleetstate.BodiesTTL

// Bodies is the bodies object store. Safe for concurrent use.
type Bodies struct {
	os    jetstream.ObjectStore
	chunk uint32 // chunk size: what one message carries
}

// OpenBodies creates or adopts the bodies object store
// (fleetstate.BodiesConfig; one try). The scheduler creates it with the
// fleet's buckets (fleetstate.Ensure); the services bind (BindBodies).
func OpenBodies(ctx context.Context, js jetstream.JetStream, names protocol.Names, replicas int) (*Bodies, error) {
	os, err := streams.ObjectStore(ctx, js, fleetstate.BodiesConfig(names), replicas)
	if err != nil {
		return nil, fmt.Errorf("bodies object store: %w", err)
	}
	return newBodies(js, os), nil
}

// ErrNoBodies: BindBodies found no bodies object store (the scheduler
// creates it with OpenBodies).
var ErrNoBodies = errors.New("bodies object store not created yet (the scheduler creates it at its start)")

// BindBodies opens the bodies object store without creating it (one try):
// ErrNoBodies if it is missing.
func BindBodies(ctx context.Context, js jetstream.JetStream, names protocol.Names) (*Bodies, error) {
	os, err := js.ObjectStore(ctx, names.BucketBodies())
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, ErrNoBodies
	}
	if err != nil {
		return nil, fmt.Errorf("bodies object store: %w", err)
	}
	return newBodies(js, os), nil
}

func newBodies(js jetstream.JetStream, os jetstream.ObjectStore) *Bodies {
	// Chunks as large as a message allows (the store's default is 128
	// KiB): fewer messages, each acknowledged.
	chunk := uint32(128 << 10)
	if mp := js.Conn().MaxPayload(); mp > 2*HeaderRoom {
		chunk = uint32(min(mp-HeaderRoom, 8<<20))
	}
	return &Bodies{os: os, chunk: chunk}
}

// Put streams r into a new object and returns its name and size.
func (b *Bodies) Put(ctx context.Context, r io.Reader) (string, int64, error) {
	name := nuid.Next()
	info, err := b.os.Put(ctx, jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: b.chunk}}, r)
	if err != nil {
		return "", 0, fmt.Errorf("store body: %w", err)
	}
	return name, int64(info.Size), nil
}

// PutBytes stores p as a new object and returns its name.
func (b *Bodies) PutBytes(ctx context.Context, p []byte) (string, error) {
	name := nuid.Next()
	if _, err := b.os.Put(ctx, jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: b.chunk}}, bytes.NewReader(p)); err != nil {
		return "", fmt.Errorf("store body: %w", err)
	}
	return name, nil
}

// Bytes reads object name whole.
func (b *Bodies) Bytes(ctx context.Context, name string) ([]byte, error) {
	p, err := b.os.GetBytes(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read body %s: %w", name, err)
	}
	return p, nil
}

// Open returns a reader of object name (which the caller closes) and its
// size.
func (b *Bodies) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	r, err := b.os.Get(ctx, name)
	if err != nil {
		return nil, 0, fmt.Errorf("read body %s: %w", name, err)
	}
	info, err := r.Info()
	if err != nil {
		_ = r.Close()
		return nil, 0, fmt.Errorf("read body %s: %w", name, err)
	}
	return r, int64(info.Size), nil
}

// List lists the objects stored (jetstream.ErrNoObjectsFound when none).
func (b *Bodies) List(ctx context.Context) ([]*jetstream.ObjectInfo, error) {
	return b.os.List(ctx)
}

// Delete removes object name (its chunks are purged).
func (b *Bodies) Delete(ctx context.Context, name string) error {
	if err := b.os.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete body %s: %w", name, err)
	}
	return nil
}
