package wire_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/wire"
)

// TestBodiesLargerThanMaxPayload: on a server with a 1 MiB max_payload, a
// 3 MiB body goes in by stream and comes out whole, by stream and at
// once; deleted, it is gone; opening the store twice adopts it.
func TestBodiesLargerThanMaxPayload(t *testing.T) {
	ns := natstest.ServerWith(t, natsembed.Options{MaxPayload: 1 << 20})
	js := natstest.JetStream(t, natstest.Conn(t, ns))
	names, _ := protocol.NewNames("")
	ctx := context.Background()
	b, err := wire.OpenBodies(ctx, js, names, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wire.OpenBodies(ctx, js, names, 1); err != nil {
		t.Fatalf("OpenBodies again = %v, want the store adopted", err)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16)
	name, size, err := b.Put(ctx, bytes.NewReader(body))
	if err != nil || size != int64(len(body)) {
		t.Fatalf("Put = %q, %d, %v; want %d bytes stored", name, size, err, len(body))
	}
	r, n, err := b.Open(ctx, name)
	if err != nil || n != int64(len(body)) {
		t.Fatalf("Open = %d, %v; want %d", n, err, len(body))
	}
	got, err := io.ReadAll(r)
	_ = r.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Open read %d bytes (%v), want the %d put", len(got), err, len(body))
	}
	if got, err := b.Bytes(ctx, name); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Bytes = %d bytes, %v; want the %d put", len(got), err, len(body))
	}
	if err := b.Delete(ctx, name); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if _, err := b.Bytes(ctx, name); err == nil {
		t.Errorf("Bytes after Delete = nil error, want the object gone")
	}
	if err := b.Delete(ctx, name); err != nil {
		t.Errorf("Delete of a deleted body = %v, want nil", err)
	}
}
