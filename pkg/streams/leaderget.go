package streams

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LeaderGet reads key's latest entry in bucket from the bucket's stream
// leader: its value and revision, found false when there is none or it
// was deleted (rev is then the delete marker's, or 0). Unlike a KV Get (a
// direct get, which any replica answers — a lagging one, such as a node
// cut off from its peers or just back, with "not found" or an old value),
// this asks the leader through the JetStream API ($JS.API.STREAM.MSG.GET),
// whose answer includes every write it acknowledged. apiPrefix is the
// JetStream API prefix ("" for $JS.API; see APIPrefix).
func LeaderGet(ctx context.Context, nc *nats.Conn, apiPrefix, bucket, key string) (data []byte, rev uint64, found bool, err error) {
	m, err := leaderLast(ctx, nc, apiPrefix, "KV_"+bucket, "$KV."+bucket+"."+key)
	if err != nil {
		return nil, 0, false, fmt.Errorf("read %s of bucket %s from the leader: %w", key, bucket, err)
	}
	if m == nil {
		return nil, 0, false, nil
	}
	h, _ := base64.StdEncoding.DecodeString(m.Hdrs)
	if strings.Contains(string(h), "KV-Operation: DEL") || strings.Contains(string(h), "KV-Operation: PURGE") ||
		strings.Contains(string(h), jetstream.MarkerReasonHeader+":") {
		return nil, m.Seq, false, nil
	}
	if data, err = base64.StdEncoding.DecodeString(m.Data); err != nil {
		return nil, 0, false, fmt.Errorf("read %s of bucket %s from the leader: %w", key, bucket, err)
	}
	return data, m.Seq, true, nil
}

// LeaderLastSeq returns the sequence of the last message of stream whose
// subject matches subject (wildcards allowed), read from the stream's
// leader as LeaderGet does; 0 when there is none. A consumer whose
// deliveries have not reached it reads a lagging replica.
func LeaderLastSeq(ctx context.Context, nc *nats.Conn, apiPrefix, stream, subject string) (uint64, error) {
	m, err := leaderLast(ctx, nc, apiPrefix, stream, subject)
	if err != nil {
		return 0, fmt.Errorf("read the last sequence of %s in %s from the leader: %w", subject, stream, err)
	}
	if m == nil {
		return 0, nil
	}
	return m.Seq, nil
}

// leaderMsg is a stored message as $JS.API.STREAM.MSG.GET answers it.
type leaderMsg struct {
	Seq  uint64 `json:"seq"`
	Hdrs string `json:"hdrs"`
	Data string `json:"data"`
}

// leaderLast asks stream's leader for its last message on subject; nil
// when there is none.
func leaderLast(ctx context.Context, nc *nats.Conn, apiPrefix, stream, subject string) (*leaderMsg, error) {
	if apiPrefix == "" {
		apiPrefix = jetstream.DefaultAPIPrefix
	}
	req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	msg, err := nc.RequestWithContext(ctx, apiPrefix+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Message *leaderMsg `json:"message"`
		Error   *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, err
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("%d %s", resp.Error.ErrCode, resp.Error.Description)
	case resp.Message == nil:
		return nil, errors.New("empty answer")
	}
	return resp.Message, nil
}

// APIPrefix is the JetStream API prefix js sends its requests under
// (ending in a dot), for requests made on its connection directly.
func APIPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}

// KVPutSubject is the subject a write to key of bucket is published on
// through js, as nats.go's KeyValue writes it: under js's API prefix when
// js has one other than the default (a JetStream domain, or another
// account's JetStream imported under a prefix), which the server maps to
// the bucket's own subject.
func KVPutSubject(js jetstream.JetStream, bucket, key string) string {
	subj := "$KV." + bucket + "." + key
	if p := APIPrefix(js); p != jetstream.DefaultAPIPrefix {
		return p + subj
	}
	return subj
}
