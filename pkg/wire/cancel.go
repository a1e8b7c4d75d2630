package wire

import (
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
)

// Cancellation. A caller that gives up on a request it sent (its client
// left, its deadline passed) tells the replica holding it, so that the
// work stops at once rather than at the request's deadline — and, since
// the handler's context is cancelled, every call it made downstream is
// cancelled the same way, down the whole chain. The cancel goes to the
// replica's call subject, the subscription the request came through, so
// the replica reads it after the request (which it admitted or refused by
// then); it names the request by its reply subject and gets no answer. A
// replica that no longer holds the request ignores it.

// CancelMsg is the cancel of the request whose reply subject is reply,
// sent to a replica's call subject.
func CancelMsg(subject, reply string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(protocol.HdrCancel, "1")
	m.Data = []byte(reply)
	return m
}

// IsCancel reports whether m, received on a call subject, is a cancel;
// its body names the request (CancelTarget).
func IsCancel(m *nats.Msg) bool {
	return m.Header != nil && m.Header.Get(protocol.HdrCancel) != ""
}

// CancelTarget is the reply subject of the request a cancel names.
func CancelTarget(m *nats.Msg) string { return string(m.Data) }
