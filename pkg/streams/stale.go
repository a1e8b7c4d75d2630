package streams

import (
	"errors"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// StaleRefusal reports a compare-and-set write refused by a stream leader
// whose state is behind the writer's: "wrong last sequence: N" (err_code
// 10071) with N below expected, the subject's last sequence as the writer
// knows it — committed state, which no current leader can be behind. It
// is a deposed leader's answer: for a few hundred milliseconds after a
// partition heals, the node that led before still takes itself for the
// leader and answers from its state at the cut, while the real leader,
// which got the same publish, may commit it. A write carrying a
// Nats-Msg-Id can be repeated to learn which: the real leader answers a
// committed one as a duplicate (its dedup check comes before the
// sequence check), a refused one with its own last sequence.
func StaleRefusal(err error, expected uint64) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) || api.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		return false
	}
	s, ok := strings.CutPrefix(api.Description, "wrong last sequence: ")
	if !ok {
		return false
	}
	n, perr := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	return perr == nil && n < expected
}
