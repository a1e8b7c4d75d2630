package wire

import (
	"strings"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
)

// Liveness probes. A router probes a replica that has held one of its
// requests for a while. The probe goes to the replica's call subject —
// the subscription the requests came through, so the replica reads it
// after every request the router sent before it — and names the reply
// subjects of the requests the router still waits for. The replica answers
// at once, without calling user code, with the subset it still holds
// (ProbeAnswer). So a request that is neither held nor answered by the
// time the answer arrives had its reply lost, and a probe that gets "no
// responders" proves the replica's subscription gone.

// ProbeMsg is a probe for the requests whose reply subjects are waiting,
// sent to a replica's call subject with reply as its own reply subject.
func ProbeMsg(subject, reply string, waiting []string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Reply = reply
	m.Header.Set(protocol.HdrProbe, "1")
	m.Data = []byte(strings.Join(waiting, "\n"))
	return m
}

// IsProbe reports whether m, received on a call subject, is a probe.
func IsProbe(m *nats.Msg) bool {
	return m.Header != nil && m.Header.Get(protocol.HdrProbe) != ""
}

// ProbeAnswer is the replica's answer to probe m: the reply subjects it
// names that holds reports as still held. Its subject is m's reply.
func ProbeAnswer(m *nats.Msg, holds func(reply string) bool) *nats.Msg {
	var held []string
	for s := range strings.SplitSeq(string(m.Data), "\n") {
		if s != "" && holds(s) {
			held = append(held, s)
		}
	}
	out := nats.NewMsg(m.Reply)
	out.Header.Set(protocol.HdrStatus, "200")
	out.Header.Set(protocol.HdrProbe, "1")
	out.Data = []byte(strings.Join(held, "\n"))
	return out
}

// ProbeHeld returns the reply subjects a probe answer reports held.
func ProbeHeld(answer *nats.Msg) map[string]bool {
	held := map[string]bool{}
	for s := range strings.SplitSeq(string(answer.Data), "\n") {
		if s != "" {
			held[s] = true
		}
	}
	return held
}

// IsNoResponders reports whether m is the server's "no responders" status
// reply: nothing was subscribed to the subject the request went to.
func IsNoResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header != nil && m.Header.Get("Status") == "503"
}

// HeaderRoom is the part of the NATS max_payload kept for a request's
// headers (NATS counts headers and body against it): the ingress accepts
// bodies up to max_payload − HeaderRoom (or a quarter of a max_payload
// below 256 KiB).
const HeaderRoom = 64 << 10

// BodyLimit is the largest request body that fits one NATS message of a
// server whose max_payload is maxPayload, capped at configured (when > 0).
func BodyLimit(configured, maxPayload int64) int64 {
	limit := configured
	if maxPayload > 0 {
		fit := maxPayload - min(HeaderRoom, maxPayload/4)
		if limit <= 0 || fit < limit {
			limit = fit
		}
	}
	return limit
}
