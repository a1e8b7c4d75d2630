// Package streams creates — or adopts — the JetStream streams, key-value
// buckets and object stores jetserve keeps its state in, with a replica
// count from configuration (nats.replicas: 1 on one server, 3 on a
// cluster).
//
// Every instance of every service ensures the state it uses at start-up,
// so ensuring must be idempotent and cheap: what exists is read, and only
// a difference is written (a needless update is a meta-layer operation).
// Existing state is adopted, never downgraded: a stream an operator created
// with 3 replicas keeps 3 even if a service asks for 1, and one with fewer
// than asked for is scaled up. Retry repeats an ensure until NATS can
// answer it (a cluster without a meta leader yet, JetStream still
// starting), so a service never exits because it started before NATS.
//
// The functions are safe for concurrent use; they start no goroutines.
package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/backoff"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// MaxReplicas is JetStream's limit on replicas of a stream.
const MaxReplicas = 5

// Bounds of one JetStream API request. A request about a stream whose
// Raft group has no leader yet — one another instance is creating on a
// cluster this moment, or one whose leader was just lost — gets no answer
// at all, so without its own bound it would wait out the caller's whole
// deadline; with it, Retry asks again shortly.
const (
	lookupTimeout = time.Second     // info of a stream, bucket or object store
	writeTimeout  = 5 * time.Second // create or update (a meta-layer proposal)
)

// bounded calls f with ctx bounded by d.
func bounded[T any](ctx context.Context, d time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}

// Stream creates cfg's stream with replicas, or adopts the existing one:
// it keeps the existing replica count when that is higher, and updates
// the stream only when a setting jetserve manages differs.
func Stream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, replicas int) (jetstream.Stream, error) {
	cfg.Replicas = max(replicas, 1)
	s, err := bounded(ctx, lookupTimeout, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, cfg.Name) })
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = bounded(ctx, writeTimeout, func(ctx context.Context) (jetstream.Stream, error) { return js.CreateStream(ctx, cfg) })
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another instance won the race
			return bounded(ctx, lookupTimeout, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, cfg.Name) })
		}
		if err != nil {
			return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	have := s.CachedInfo().Config
	cfg.Replicas = max(cfg.Replicas, have.Replicas)
	if sameStream(have, cfg) {
		return s, nil
	}
	s, err = bounded(ctx, writeTimeout, func(ctx context.Context) (jetstream.Stream, error) { return js.UpdateStream(ctx, cfg) })
	if err != nil {
		return nil, fmt.Errorf("update stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// sameStream compares the settings jetserve sets on its streams, as the
// server stores them: a limit of 0 is kept as -1 (none), and a duplicate
// window of 0 as the server's default (so any window the stream has is
// what 0 asks for). Comparing the request as written would update the
// stream at every ensure — a meta-layer operation each service start, and
// one that races the server's consumer creation on the stream.
func sameStream(have, want jetstream.StreamConfig) bool {
	return have.Replicas == want.Replicas && limit(have.MaxMsgs) == limit(want.MaxMsgs) && have.MaxAge == want.MaxAge &&
		have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates) &&
		limit(have.MaxMsgsPerSubject) == limit(want.MaxMsgsPerSubject) &&
		have.DiscardNewPerSubject == want.DiscardNewPerSubject && have.AllowDirect == want.AllowDirect &&
		have.Retention == want.Retention && have.Discard == want.Discard &&
		have.AllowMsgSchedules == want.AllowMsgSchedules && have.AllowMsgTTL == want.AllowMsgTTL &&
		have.AllowRollup == want.AllowRollup && sameMetadata(have.Metadata, want.Metadata)
}

// limit is a stream limit as the server stores it: 0 (unset) is -1.
func limit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// sameMetadata compares the metadata jetserve sets (keys "jetserve.*");
// the server adds its own.
func sameMetadata(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok && strings.HasPrefix(k, "jetserve.") {
			return false
		}
	}
	return true
}

// KeyValue creates cfg's bucket with replicas, or adopts the existing one
// as Stream does (its backing stream's replicas are kept when higher).
func KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, replicas int) (jetstream.KeyValue, error) {
	cfg.Replicas = max(replicas, 1)
	kv, err := bounded(ctx, lookupTimeout, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, cfg.Bucket) })
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		kv, err = bounded(ctx, writeTimeout, func(ctx context.Context) (jetstream.KeyValue, error) { return js.CreateKeyValue(ctx, cfg) })
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return bounded(ctx, lookupTimeout, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, cfg.Bucket) })
		}
		if err != nil {
			return nil, fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
		}
		return kv, nil
	case err != nil:
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	st, err := bounded(ctx, lookupTimeout, kv.Status)
	if err != nil {
		return nil, fmt.Errorf("bucket %s status: %w", cfg.Bucket, err)
	}
	have := backing(st)
	cfg.Replicas = max(cfg.Replicas, have.Replicas)
	if have.Replicas == cfg.Replicas && st.TTL() == cfg.TTL && st.History() == int64(max(cfg.History, 1)) &&
		st.LimitMarkerTTL() == cfg.LimitMarkerTTL && have.Description == cfg.Description {
		return kv, nil
	}
	kv, err = bounded(ctx, writeTimeout, func(ctx context.Context) (jetstream.KeyValue, error) { return js.UpdateKeyValue(ctx, cfg) })
	if err != nil {
		return nil, fmt.Errorf("update bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// backing returns the configuration of a bucket's stream.
func backing(st jetstream.KeyValueStatus) jetstream.StreamConfig {
	if s, ok := st.(interface{ StreamInfo() *jetstream.StreamInfo }); ok && s.StreamInfo() != nil {
		return s.StreamInfo().Config
	}
	return jetstream.StreamConfig{}
}

// ObjectStore creates cfg's object store with replicas, or adopts the
// existing one as Stream does.
func ObjectStore(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig, replicas int) (jetstream.ObjectStore, error) {
	cfg.Replicas = max(replicas, 1)
	obj, err := bounded(ctx, lookupTimeout, func(ctx context.Context) (jetstream.ObjectStore, error) { return js.ObjectStore(ctx, cfg.Bucket) })
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		obj, err = bounded(ctx, writeTimeout, func(ctx context.Context) (jetstream.ObjectStore, error) { return js.CreateObjectStore(ctx, cfg) })
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return bounded(ctx, lookupTimeout, func(ctx context.Context) (jetstream.ObjectStore, error) { return js.ObjectStore(ctx, cfg.Bucket) })
		}
		if err != nil {
			return nil, fmt.Errorf("create object store %s: %w", cfg.Bucket, err)
		}
		return obj, nil
	case err != nil:
		return nil, fmt.Errorf("object store %s: %w", cfg.Bucket, err)
	}
	st, err := bounded(ctx, lookupTimeout, obj.Status)
	if err != nil {
		return nil, fmt.Errorf("object store %s status: %w", cfg.Bucket, err)
	}
	cfg.Replicas = max(cfg.Replicas, st.Replicas())
	if st.Replicas() == cfg.Replicas && st.TTL() == cfg.TTL && st.Description() == cfg.Description {
		return obj, nil
	}
	obj, err = bounded(ctx, writeTimeout, func(ctx context.Context) (jetstream.ObjectStore, error) { return js.UpdateObjectStore(ctx, cfg) })
	if err != nil {
		return nil, fmt.Errorf("update object store %s: %w", cfg.Bucket, err)
	}
	return obj, nil
}

// Retry backoff bounds.
const (
	firstRetry = 250 * time.Millisecond
	maxRetry   = 5 * time.Second
)

// Retry calls f until it succeeds or ctx ends, waiting 250 ms after the
// first failure and doubling up to 5 s. Each failure is logged (warn) with
// what and the attempt; the error of the last attempt is returned, joined
// with ctx's, when ctx ends first.
func Retry(ctx context.Context, log zerolog.Logger, what string, f func(ctx context.Context) error) error {
	b := backoff.New(firstRetry, maxRetry)
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			if attempt > 1 {
				log.Info().Str("what", what).Int("attempt", attempt).Msg("ready after retrying")
			}
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		wait := b.Next()
		log.Warn().Err(err).Str("what", what).Int("attempt", attempt).Dur("retry_in", wait).Msg("JetStream not ready; retrying")
		if !backoff.Sleep(ctx, wait) {
			return errors.Join(err, ctx.Err())
		}
	}
}
