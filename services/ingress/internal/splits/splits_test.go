package splits

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/testclock"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCounterSlidesOverTheWindow(t *testing.T) {
	clk := testclock.New(time.Unix(1_000_000, 0))
	c := NewCounter(clk.Now)
	for range 95 {
		c.Add("a", "root", "v1")
	}
	for range 5 {
		c.Add("a", "root", "v2")
	}
	clk.Add(30 * time.Second)
	c.Add("a", "root", "v2")
	c.Add("b", "split", "x")
	if got := c.Counts(); got["a"]["root"]["v1"] != 95 || got["a"]["root"]["v2"] != 6 || got["b"]["split"]["x"] != 1 {
		t.Fatalf("Counts = %v, want v1 95, v2 6, b/split/x 1", got)
	}
	clk.Add(30 * time.Second) // the first second is now 60 s old: out of the window
	if got := c.Counts(); got["a"]["root"]["v1"] != 0 || got["a"]["root"]["v2"] != 1 {
		t.Fatalf("Counts after a minute = %v, want only the later v2 request", got)
	}
	clk.Add(Window)
	if got := c.Counts(); len(got) != 0 {
		t.Fatalf("Counts after two minutes = %v, want none", got)
	}
	// A slot is reused for a later second without the old count.
	c.Add("a", "root", "v1")
	if got := c.Counts(); got["a"]["root"]["v1"] != 1 {
		t.Fatalf("Counts = %v, want 1", got)
	}
}

func TestPublisherSendsWhileNonZeroThenOnceMore(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	clk := testclock.New(time.Now())
	c := NewCounter(clk.Now)
	sub, err := nc.SubscribeSync("x.graphstats")
	if err != nil {
		t.Fatal(err)
	}
	p := &Publisher{NC: natstest.Conn(t, ns), Subject: "x.graphstats", IngressID: "ing-1", Counter: c, Log: zerolog.Nop()}
	next := func(wantSent bool) protocol.GraphStats {
		t.Helper()
		sent, err := p.Tick()
		if err != nil || sent != wantSent {
			t.Fatalf("Tick = %v, %v; want %v", sent, err, wantSent)
		}
		if !sent {
			return protocol.GraphStats{}
		}
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var s protocol.GraphStats
		if err := json.Unmarshal(m.Data, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	next(false) // nothing counted: nothing sent
	c.Add("a", "root", "v2")
	if s := next(true); s.IngressID != "ing-1" || s.Splits["a"]["root"]["v2"] != 1 || s.WindowSeconds != 60 {
		t.Fatalf("report = %+v, want ing-1 with a/root/v2 = 1 over 60 s", s)
	}
	clk.Add(2 * Window) // every count leaves the window
	if s := next(true); len(s.Splits) != 0 {
		t.Fatalf("report = %+v, want the counts at zero", s)
	}
	next(false) // and then nothing while all stays zero

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, 5*time.Millisecond) }()
	c.Add("a", "root", "v1")
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("Run sent nothing: %v", err)
	}
	var s protocol.GraphStats
	if err := json.Unmarshal(m.Data, &s); err != nil || s.Splits["a"]["root"]["v1"] != 1 {
		t.Errorf("Run's report = %s, want a/root/v1 = 1", m.Data)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
