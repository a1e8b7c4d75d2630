package jobs

import (
	"context"
	"time"

	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/nats-io/nats.go"
)

// staleFirstDelivery is how old a job message may be, on its first
// delivery, before the runner reads the job's record from the bucket's
// leader before running it. A job delivered at once after its submit is
// running for the first time; one that waited longer may be a redelivery
// that a new consumer leader counts as the first (an ack lost while a NATS
// node was cut off), of a job whose record already says it finished.
const staleFirstDelivery = 2 * time.Second

// leaderHasRecord reports whether the records bucket's stream leader
// holds a live record for key.
func leaderHasRecord(ctx context.Context, nc *nats.Conn, bucket, key string) (bool, error) {
	_, _, found, err := leaderGet(ctx, nc, bucket, key)
	return found, err
}

// leaderGet reads a job record from the bucket's leader (streams.LeaderGet).
func leaderGet(ctx context.Context, nc *nats.Conn, bucket, key string) (data []byte, rev uint64, found bool, err error) {
	return streams.LeaderGet(ctx, nc, "", bucket, key)
}
