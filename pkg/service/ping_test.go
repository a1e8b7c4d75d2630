package service

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/rs/zerolog"
)

// blackhole is a TCP proxy to a NATS server whose connections can go
// silent — kept open, nothing forwarded either way, no reset — as a
// server cut off from the network looks to its clients. Connections made
// after the cut are forwarded.
type blackhole struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []net.Conn // guarded by mu; client sides of the connections so far
	cutAt int        // guarded by mu; connections numbered ≤ cutAt are silent
	wg    sync.WaitGroup
}

func newBlackhole(t *testing.T, target string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *blackhole) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", b.target)
		if err != nil {
			c.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, c, s)
		gen := len(b.conns)
		b.mu.Unlock()
		b.wg.Add(2)
		go b.copy(s, c, gen)
		go b.copy(c, s, gen)
	}
}

// copy forwards src to dst until either closes, dropping everything once
// the connection was cut.
func (b *blackhole) copy(dst, src net.Conn, gen int) {
	defer b.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if b.silenced(gen) {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// silence cuts every connection made so far.
func (b *blackhole) silence() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cutAt = len(b.conns)
}

func (b *blackhole) silenced(gen int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return gen <= b.cutAt
}

// TestConnectLeavesASilentServer: a connection whose server stops
// answering (no reset) is given up after two unanswered pings and
// re-established, within a few ping intervals.
func TestConnectLeavesASilentServer(t *testing.T) {
	ns := natstest.Server(t)
	bh := newBlackhole(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	c := DefaultCommon("").NATS
	c.URL = "nats://" + bh.ln.Addr().String()
	c.PingInterval = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := Connect(ctx, c, "test", zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := nc.Stats().Reconnects
	bh.silence()
	start := time.Now()
	for nc.Stats().Reconnects == before {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("still on the silent connection %v after it went silent (ping_interval %v)", time.Since(start), c.PingInterval)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := nc.FlushTimeout(2 * time.Second); err != nil {
		t.Errorf("after the reconnect: %v", err)
	}
	t.Logf("left the silent server and reconnected in %v", time.Since(start).Round(time.Millisecond))
}
