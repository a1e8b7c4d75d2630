package jobs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

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

// leaderGet reads key's latest entry in bucket from the bucket's stream
// leader: its value and revision, found false when there is none or it
// was deleted. Unlike a KV Get (a direct get, which any replica answers —
// a lagging one, such as a node cut off from its peers, with "not found"
// or an old value), this asks the leader through the JetStream API, whose
// answer includes every write it acknowledged.
func leaderGet(ctx context.Context, nc *nats.Conn, bucket, key string) (data []byte, rev uint64, found bool, err error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return nil, 0, false, fmt.Errorf("read job record %s from the leader: %w", key, err)
	}
	var resp struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs string `json:"hdrs"`
			Data string `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, 0, false, fmt.Errorf("read job record %s from the leader: %w", key, err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, 0, false, nil
	case resp.Error != nil:
		return nil, 0, false, fmt.Errorf("read job record %s from the leader: %d %s", key, resp.Error.ErrCode, resp.Error.Description)
	case resp.Message == nil:
		return nil, 0, false, fmt.Errorf("read job record %s from the leader: empty answer", key)
	}
	h, _ := base64.StdEncoding.DecodeString(resp.Message.Hdrs)
	if strings.Contains(string(h), "KV-Operation: DEL") || strings.Contains(string(h), "KV-Operation: PURGE") {
		return nil, resp.Message.Seq, false, nil
	}
	if data, err = base64.StdEncoding.DecodeString(resp.Message.Data); err != nil {
		return nil, 0, false, fmt.Errorf("read job record %s from the leader: %w", key, err)
	}
	return data, resp.Message.Seq, true, nil
}
