package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/nats-io/nats.go"
)

// TestRawChainPassesEveryHop: BenchmarkComposition's raw NATS chains (two
// responder processes) answer with the request's body, n5's request
// having passed hops 1 to 5 once each; a chain missing a hop answers with
// an error naming the hop that could not pass it on, which the gateway
// turns into 502.
func TestRawChainPassesEveryHop(t *testing.T) {
	ns := natstest.Server(t)
	startRawChains(t, ns.ClientURL(), nil, "")
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	seen := make(chan string, 64)
	sub, err := nc.Subscribe("bench.raw.>", func(m *nats.Msg) { seen <- m.Subject })
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, chain := range []string{"n1", "n5"} {
		m, err := nc.Request(rawHopSubject(chain, 1), echoBody, 5*time.Second)
		if err != nil {
			t.Fatalf("request %s: %v", chain, err)
		}
		if msg, failed := rawHopFailed(m); failed || string(m.Data) != string(echoBody) {
			t.Fatalf("%s answered %q (error %q), want the echo of %s", chain, m.Data, msg, echoBody)
		}
	}
	want := []string{"bench.raw.n1.1", "bench.raw.n5.1", "bench.raw.n5.2", "bench.raw.n5.3", "bench.raw.n5.4", "bench.raw.n5.5"}
	var got []string
	for range want {
		select {
		case s := <-seen:
			got = append(got, s)
		case <-time.After(5 * time.Second):
			t.Fatalf("hops seen: %v, want %v", got, want)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("hops seen: %v, want %v", got, want)
	}

	// A chain whose hop 2 no process serves (nor this test's subscription).
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	startResponderProcess(t, ns.ClientURL(), nil, rawHop{"broken", 1, 3})
	m, err := nc.Request(rawHopSubject("broken", 1), echoBody, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msg, failed := rawHopFailed(m); !failed || !strings.Contains(msg, "broken:1/3") || !strings.Contains(msg, "bench.raw.broken.2") {
		t.Errorf("a chain missing hop 2 answered %q with error %q, want an error naming hop broken:1/3 and subject bench.raw.broken.2", m.Data, msg)
	}
}

// TestRawHops: responderHopsEnv's value round-trips, and a malformed one
// is refused.
func TestRawHops(t *testing.T) {
	hops, err := rawHops("n1:1/1,n5:2/5")
	if err != nil || len(hops) != 2 || hops[0] != (rawHop{"n1", 1, 1}) || hops[1] != (rawHop{"n5", 2, 5}) {
		t.Fatalf(`rawHops("n1:1/1,n5:2/5") = %v, %v; want [n1:1/1 n5:2/5]`, hops, err)
	}
	for _, bad := range []string{"", "n5", "n5:2", "n5:0/5", "n5:6/5", ":1/1", "n5:x/5"} {
		if _, err := rawHops(bad); err == nil {
			t.Errorf("rawHops(%q) = nil error, want one", bad)
		}
	}
}
