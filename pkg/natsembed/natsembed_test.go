package natsembed_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A started server takes JetStream clients at once, carries 8 MiB
// messages, and leaves no goroutine behind once shut down.
func TestStartServeShutdown(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	nc, err := natsembed.Connect(ns, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got != natsembed.DefaultMaxPayload {
		t.Errorf("max_payload = %d, want %d", got, natsembed.DefaultMaxPayload)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream account info: %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	if _, err := natsembed.Start(natsembed.Options{Port: -1}); err == nil || !strings.Contains(err.Error(), "store dir") {
		t.Errorf("Start without a store dir = %v, want an error naming it", err)
	}
	_, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir(),
		Cluster: natsembed.ClusterOptions{Name: "c", Routes: []string{"nats-route://%zz"}}})
	if err == nil || !strings.Contains(err.Error(), "route") {
		t.Errorf("Start with a bad route = %v, want an error naming it", err)
	}
}
