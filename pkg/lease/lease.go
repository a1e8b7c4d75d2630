// Package lease elects one leader among several instances of a service with
// a JetStream KV key that carries a per-key TTL: the holder renews it with a
// compare-and-set on the key's revision; when the holder dies the key
// expires and another instance's Create wins. The revision at acquisition
// is the leadership epoch, usable as a fencing token.
//
// Run blocks; it calls lead with a context that is cancelled as soon as
// leadership is lost (a failed renewal), and returns when ctx ends.
package lease

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Elector contends for one key.
type Elector struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	key    string
	id     string
	ttl    time.Duration
	log    zerolog.Logger
}

// New returns an elector for key in kv (a bucket with LimitMarkerTTL set),
// identifying itself as id.
func New(js jetstream.JetStream, kv jetstream.KeyValue, key, id string, ttl time.Duration, log zerolog.Logger) *Elector {
	return &Elector{js: js, kv: kv, bucket: kv.Bucket(), key: key, id: id, ttl: ttl, log: log}
}

// Holder returns the id of the current leader, "" if none.
func (e *Elector) Holder(ctx context.Context) string {
	ent, err := e.kv.Get(ctx, e.key)
	if err != nil {
		return ""
	}
	return string(ent.Value())
}

// Run contends until ctx ends. Each time it wins it calls lead(leadCtx,
// epoch) and keeps renewing; leadCtx ends when the lease is lost or ctx
// ends. lead should return promptly once leadCtx is done.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context, epoch uint64)) error {
	retry := e.ttl / 5
	for {
		rev, err := e.kv.Create(ctx, e.key, []byte(e.id), jetstream.KeyTTL(e.ttl))
		if err == nil {
			e.log.Info().Uint64("epoch", rev).Msg("became leader")
			e.leadWhileRenewed(ctx, rev, lead)
			e.log.Info().Uint64("epoch", rev).Msg("leadership ended")
		} else if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			e.log.Warn().Err(err).Msg("lease contend")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

func (e *Elector) leadWhileRenewed(ctx context.Context, rev uint64, lead func(context.Context, uint64)) {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	epoch := rev
	go func() {
		defer close(done)
		lead(lctx, epoch)
	}()
	defer func() {
		cancel()
		<-done
		// Give the lease up at once on a clean stop so a standby takes over
		// without waiting for the TTL.
		dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
		defer dcancel()
		_ = e.kv.Delete(dctx, e.key, jetstream.LastRevision(rev))
	}()
	t := time.NewTicker(e.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-t.C:
			next, err := e.renew(ctx, rev)
			if err != nil {
				e.log.Warn().Err(err).Msg("lease lost")
				return
			}
			rev = next
		}
	}
}

// renew extends the lease held at rev. The renewal carries a message id
// of its own, so that a repeat of it is idempotent: a refusal that only a
// deposed leader can give (streams.StaleRefusal: after a partition heals
// the node that led the bucket answers from its stale state while the
// real leader may commit the renewal) is repeated until the real leader
// answers — a duplicate if it committed — rather than taken for the
// lease lost, which would leave the lease to its TTL with no leader.
func (e *Elector) renew(ctx context.Context, rev uint64) (uint64, error) {
	rctx, cancel := context.WithTimeout(ctx, e.ttl/3)
	defer cancel()
	msg := &nats.Msg{Subject: streams.KVPutSubject(e.js, e.bucket, e.key), Data: []byte(e.id)}
	msgID := e.id + "." + strconv.FormatUint(rev, 10) // revisions are never reused: unique
	for {
		ack, err := e.js.PublishMsg(rctx, msg, jetstream.WithExpectLastSequencePerSubject(rev),
			jetstream.WithMsgTTL(e.ttl), jetstream.WithMsgID(msgID))
		if err == nil {
			return ack.Sequence, nil
		}
		if !streams.StaleRefusal(err, rev) {
			return 0, fmt.Errorf("renew lease %s: %w", e.key, err)
		}
		e.log.Debug().Err(err).Uint64("revision", rev).Msg("lease renewal refused from stale state (a deposed leader): repeated")
		select {
		case <-rctx.Done():
			return 0, fmt.Errorf("renew lease %s: only a deposed leader answered: %w", e.key, err)
		case <-time.After(staleRetryWait):
		}
	}
}

// staleRetryWait separates the repeats of a renewal a deposed leader
// refused.
const staleRetryWait = 25 * time.Millisecond
