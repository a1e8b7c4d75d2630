package natstest

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// APIRelay puts a relay between a JetStream client and the real server's
// JetStream API, to make the server look as it does in a cluster fault:
// an API request nobody answers (a stream electing a leader), a direct
// get answered by a lagging replica. It returns a JetStream client on nc
// whose API requests (and KV writes, which such a client sends under its
// API prefix) go to the relay: hook sees each one first and returns true
// when it has dealt with it (answered it, or dropped it); the relay
// forwards the others to the server with the requester's reply subject,
// so the server answers the requester directly (a pull request gets many
// answers). The relay listens on relay, a connection to the same server,
// until the test ends.
func APIRelay(t testing.TB, relay, nc *nats.Conn, hook func(api string, m *nats.Msg) bool) jetstream.JetStream {
	t.Helper()
	prefix := "relay." + nats.NewInbox()[len("_INBOX."):] + ".API"
	sub, err := relay.Subscribe(prefix+".>", func(m *nats.Msg) {
		rest := strings.TrimPrefix(m.Subject, prefix+".")
		if hook != nil && hook(rest, m) {
			return
		}
		subj := "$JS.API." + rest
		if strings.HasPrefix(rest, "$KV.") {
			subj = rest // a KV write under the prefix
		}
		_ = relay.PublishMsg(&nats.Msg{Subject: subj, Reply: m.Reply, Header: m.Header, Data: m.Data})
	})
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := relay.Flush(); err != nil {
		t.Fatalf("relay: %v", err)
	}
	js, err := jetstream.NewWithAPIPrefix(nc, prefix)
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	return js
}
