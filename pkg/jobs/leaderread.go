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
// holds a live record for key. Unlike a KV Get (a direct get, which any
// replica answers — a lagging one with "not found"), this asks the leader
// through the JetStream API.
func leaderHasRecord(ctx context.Context, nc *nats.Conn, bucket, key string) (bool, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return false, fmt.Errorf("read job record %s from the leader: %w", key, err)
	}
	var resp struct {
		Message *struct {
			Hdrs string `json:"hdrs"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return false, fmt.Errorf("read job record %s from the leader: %w", key, err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return false, nil
	case resp.Error != nil:
		return false, fmt.Errorf("read job record %s from the leader: %d %s", key, resp.Error.ErrCode, resp.Error.Description)
	case resp.Message == nil:
		return false, fmt.Errorf("read job record %s from the leader: empty answer", key)
	}
	h, _ := base64.StdEncoding.DecodeString(resp.Message.Hdrs)
	deleted := strings.Contains(string(h), "KV-Operation: DEL") || strings.Contains(string(h), "KV-Operation: PURGE")
	return !deleted, nil
}
