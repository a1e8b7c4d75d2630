package streams_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func replicasOf(t *testing.T, js jetstream.JetStream, stream string) int {
	t.Helper()
	s, err := js.Stream(ctxT(t), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return s.CachedInfo().Config.Replicas
}

// On a 3-node cluster: what an operator created with 3 replicas keeps 3
// when a service asks for 1, and what exists with 1 is scaled up to 3.
func TestAdoptNeverDowngrades(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	js := natstest.JetStream(t, natstest.Conn(t, nodes[0]))
	ctx := ctxT(t)

	// Pre-created by an operator as R3.
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ops_r3", Replicas: 3, History: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OPS_R3", Subjects: []string{"ops.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "ops_obj", Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: "ops_r3", History: 5}, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Stream(ctx, js, jetstream.StreamConfig{Name: "OPS_R3", Subjects: []string{"ops.>"}}, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.ObjectStore(ctx, js, jetstream.ObjectStoreConfig{Bucket: "ops_obj"}, 1); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"KV_ops_r3", "OPS_R3", "OBJ_ops_obj"} {
		if got := replicasOf(t, js, s); got != 3 {
			t.Errorf("%s replicas after ensuring with 1 = %d, want 3 (adopted, not downgraded)", s, got)
		}
	}

	// Created as R1 (an earlier single-node start), now asked for 3.
	if _, err := streams.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: "grow", TTL: time.Minute}, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: "grow", TTL: time.Minute}, 3); err != nil {
		t.Fatal(err)
	}
	if got := replicasOf(t, js, "KV_grow"); got != 3 {
		t.Errorf("KV_grow replicas = %d, want 3 (scaled up)", got)
	}
}

// Ensuring what exists with the same settings writes nothing; a changed
// setting is applied.
func TestEnsureIsIdempotent(t *testing.T) {
	ns := natstest.Server(t)
	js := natstest.JetStream(t, natstest.Conn(t, ns))
	ctx := ctxT(t)
	cfg := jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, MaxMsgs: 10, Description: "d"}
	s1, err := streams.Stream(ctx, js, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	created := s1.CachedInfo().Created
	s2, err := streams.Stream(ctx, js, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !s2.CachedInfo().Created.Equal(created) || s2.CachedInfo().Config.MaxMsgs != 10 {
		t.Fatalf("second ensure changed the stream: %+v", s2.CachedInfo().Config)
	}
	cfg.MaxMsgs = 20
	s3, err := streams.Stream(ctx, js, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := s3.CachedInfo().Config.MaxMsgs; got != 20 {
		t.Fatalf("MaxMsgs after ensuring 20 = %d", got)
	}

	kvCfg := jetstream.KeyValueConfig{Bucket: "b", History: 3, TTL: time.Hour, LimitMarkerTTL: time.Second}
	if _, err := streams.KeyValue(ctx, js, kvCfg, 1); err != nil {
		t.Fatal(err)
	}
	kv, err := streams.KeyValue(ctx, js, kvCfg, 1)
	if err != nil {
		t.Fatalf("ensure an existing bucket: %v", err)
	}
	st, _ := kv.Status(ctx)
	if st.History() != 3 || st.TTL() != time.Hour || st.LimitMarkerTTL() != time.Second {
		t.Fatalf("bucket status %+v, want history 3, TTL 1h, marker TTL 1s", st)
	}
	kvCfg.History = 5
	kv, err = streams.KeyValue(ctx, js, kvCfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := kv.Status(ctx); st.History() != 5 {
		t.Fatalf("history after ensuring 5 = %d", st.History())
	}

	// What an older version created gains what this one sets: a records
	// bucket its per-message TTLs (jobs' live records), a workflow stream
	// no MaxAge, per-message TTLs and rollups.
	old := jetstream.KeyValueConfig{Bucket: "old", History: 1, TTL: time.Hour}
	if _, err := streams.KeyValue(ctx, js, old, 1); err != nil {
		t.Fatal(err)
	}
	old.LimitMarkerTTL = time.Second
	kv, err = streams.KeyValue(ctx, js, old, 1)
	if err != nil {
		t.Fatalf("ensure a marker TTL on an existing bucket: %v", err)
	}
	if st, _ := kv.Status(ctx); st.LimitMarkerTTL() != time.Second {
		t.Fatalf("marker TTL after ensuring 1s = %s", st.LimitMarkerTTL())
	}
	wf := jetstream.StreamConfig{Name: "WF", Subjects: []string{"wf.>"}, MaxAge: time.Hour, AllowMsgSchedules: true}
	if _, err := streams.Stream(ctx, js, wf, 1); err != nil {
		t.Fatal(err)
	}
	wf.MaxAge, wf.AllowMsgTTL, wf.AllowRollup = 0, true, true
	s4, err := streams.Stream(ctx, js, wf, 1)
	if err != nil {
		t.Fatalf("ensure TTLs and rollups on an existing stream: %v", err)
	}
	if c := s4.CachedInfo().Config; c.MaxAge != 0 || !c.AllowMsgTTL || !c.AllowRollup {
		t.Fatalf("stream after the update: MaxAge %s, AllowMsgTTL %v, AllowRollup %v; want 0, true, true", c.MaxAge, c.AllowMsgTTL, c.AllowRollup)
	}
}

func TestRetry(t *testing.T) {
	var log bytes.Buffer
	calls := 0
	err := streams.Retry(context.Background(), zerolog.New(&log), "thing", func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("no meta leader")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Retry = %v after %d calls, want nil after 3", err, calls)
	}
	if n := strings.Count(log.String(), "JetStream not ready"); n != 2 {
		t.Errorf("Retry logged %d failures, want 2:\n%s", n, log.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = streams.Retry(ctx, zerolog.Nop(), "thing", func(context.Context) error { return errors.New("still down") })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still down") {
		t.Fatalf("Retry until the deadline = %v, want the last error joined with the deadline", err)
	}
}

// Ensuring a stream as it already is sends no update, whichever limits its
// config leaves at zero (the server stores them as -1, and a zero
// duplicate window as its default): the dead-letter stream's config
// (MaxMsgsPerSubject unset) was updated at every ensure.
func TestEnsureUnchangedSendsNoUpdate(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js := natstest.JetStream(t, nc)
	ctx := ctxT(t)
	updates, err := nc.SubscribeSync("$JS.API.STREAM.UPDATE.>")
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "DLQ", Subjects: []string{"dlq.>"}, MaxAge: time.Hour, Description: "d"},
		{Name: "LIM", Subjects: []string{"lim.>"}, MaxMsgs: 10, MaxMsgsPerSubject: 2, Duplicates: time.Minute},
	} {
		for range 3 {
			if _, err := streams.Stream(ctx, js, cfg, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := updates.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("ensuring unchanged streams sent %s: %s", m.Subject, m.Data)
	}
}

// TestStaleRefusal: a compare-and-set refused with a last sequence below
// the expected one is a deposed leader's answer; one refused with a
// higher one (someone wrote since) is not, nor is any other error.
func TestStaleRefusal(t *testing.T) {
	ns := natstest.Server(t)
	js := natstest.JetStream(t, natstest.Conn(t, ns))
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cas"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(expected uint64) error {
		_, err := js.Publish(ctx, "$KV.cas.k", []byte("w"), jetstream.WithExpectLastSequencePerSubject(expected))
		return err
	}
	ahead := publish(5) // the subject is at 2: "wrong last sequence: 2"
	if ahead == nil || !streams.StaleRefusal(ahead, 5) {
		t.Errorf("StaleRefusal(%v, 5) = false, want true", ahead)
	}
	behind := publish(1)
	if behind == nil || streams.StaleRefusal(behind, 1) {
		t.Errorf("StaleRefusal(%v, 1) = true, want false: a real conflict", behind)
	}
	if streams.StaleRefusal(errors.New("wrong last sequence: 1"), 5) || streams.StaleRefusal(nil, 5) {
		t.Error("StaleRefusal of an error that is not the server's = true")
	}
}
