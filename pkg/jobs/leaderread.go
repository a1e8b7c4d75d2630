package jobs

import (
	"context"
	"time"

	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/nats-io/nats.go/jetstream"
)

// staleFirstDelivery is how old a job message with a generated id may be,
// on its first delivery, for the runner to run it unclaimed (Runner.claim's
// fast path). A job delivered at once after its submit is running for the
// first time; one that waited longer may be a redelivery that a new
// consumer leader counts as the first (an ack lost while a NATS node was
// cut off), of a job whose record already says it finished: it is claimed
// with a create-only write before it runs. A new consumer leader is
// elected at least nats-server's minimum election timeout (4 s) after the
// old one was last heard from, so its "first" delivery of a job the old
// one held comes later than this. A deposed consumer leader that still
// takes itself for the leader delivers nothing: a replicated consumer with
// explicit acks (the job consumer) sends a message only once its delivered
// state has a quorum (nats-server's consumer.replicateDeliveries;
// TestPartitionedLeaderCannotStartAFinishedJob), and a generated id is
// never submitted again (no new incarnation).
const staleFirstDelivery = 2 * time.Second

// leaderGet reads a job record from the bucket's leader (streams.LeaderGet),
// through js's JetStream API. A leader deposed while it was cut off may
// still answer, from its stale state, for a moment after it is back: what
// runs a job is never decided by this read alone, only by a write.
func leaderGet(ctx context.Context, js jetstream.JetStream, bucket, key string) (data []byte, rev uint64, found bool, err error) {
	return streams.LeaderGet(ctx, js.Conn(), streams.APIPrefix(js), bucket, key)
}
