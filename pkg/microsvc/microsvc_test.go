package microsvc

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func request[T any](t *testing.T, nc *nats.Conn, subj string) T {
	t.Helper()
	m, err := nc.Request(subj, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subj, err)
	}
	var v T
	if err := json.Unmarshal(m.Data, &v); err != nil {
		t.Fatalf("%s: decode %s: %v", subj, m.Data, err)
	}
	return v
}

// TestDiscoveryAndStats: the verbs answer on all three subjects with
// micro's own documents; an endpoint with Stats reports what it says (an
// asynchronous handler's real work), one without is timed around its
// handler; Error sets micro's error headers; Stop ends every subscription.
func TestDiscoveryAndStats(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	var calls atomic.Int64
	svc, err := Start(nc, Config{Name: "app-dep", Version: "0.1.0", Description: "d", Metadata: map[string]string{"replica": "r1"}},
		Endpoint{Name: "call", Subject: "x.r1.call",
			Handler: func(m *nats.Msg) {
				calls.Add(1)
				if string(m.Data) == "bad" {
					_ = Error(m, "503", "replica_full", []byte("full"), nats.Header{"X-Replica": {"r1"}})
					return
				}
				_ = m.Respond(m.Data)
			},
			Stats: func() micro.EndpointStats {
				return micro.EndpointStats{NumRequests: 7, NumErrors: 2, ProcessingTime: 700 * time.Millisecond, Data: json.RawMessage(`{"served":7}`)}
			}},
		Endpoint{Name: "health", Subject: "x.r1.health", Handler: func(m *nats.Msg) {
			time.Sleep(2 * time.Millisecond)
			_ = m.Respond(nil)
		}},
	)
	if err != nil {
		t.Fatal(err)
	}

	for _, subj := range []string{"$SRV.PING", "$SRV.PING.app-dep", "$SRV.PING.app-dep." + svc.ID()} {
		if p := request[micro.Ping](t, nc, subj); p.Type != micro.PingResponseType || p.Name != "app-dep" || p.ID != svc.ID() || p.Version != "0.1.0" {
			t.Errorf("%s = %+v", subj, p)
		}
	}
	info := request[micro.Info](t, nc, "$SRV.INFO.app-dep")
	if info.Type != micro.InfoResponseType || info.Description != "d" || info.Metadata["replica"] != "r1" || len(info.Endpoints) != 2 ||
		info.Endpoints[0].Subject != "x.r1.call" || info.Endpoints[1].Name != "health" {
		t.Errorf("info = %+v", info)
	}

	if m, err := nc.Request("x.r1.call", []byte("hi"), 5*time.Second); err != nil || string(m.Data) != "hi" {
		t.Fatalf("call = %v, %v", m, err)
	}
	m, err := nc.Request("x.r1.call", []byte("bad"), 5*time.Second)
	if err != nil || m.Header.Get(micro.ErrorCodeHeader) != "503" || m.Header.Get(micro.ErrorHeader) != "replica_full" ||
		m.Header.Get("X-Replica") != "r1" || string(m.Data) != "full" {
		t.Fatalf("error answer = %+v, %v; want micro's error headers beside ours", m, err)
	}
	for range 3 {
		if _, err := nc.Request("x.r1.health", nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	st := request[micro.Stats](t, nc, "$SRV.STATS.app-dep."+svc.ID())
	if st.Type != micro.StatsResponseType || len(st.Endpoints) != 2 {
		t.Fatalf("stats = %+v", st)
	}
	call, health := st.Endpoints[0], st.Endpoints[1]
	if call.Name != "call" || call.Subject != "x.r1.call" || call.NumRequests != 7 || call.NumErrors != 2 ||
		call.AverageProcessingTime != 100*time.Millisecond || string(call.Data) != `{"served":7}` {
		t.Errorf("call stats = %+v, want the endpoint's own numbers and a derived average", call)
	}
	if health.NumRequests != 3 || health.ProcessingTime < 6*time.Millisecond || health.AverageProcessingTime < 2*time.Millisecond {
		t.Errorf("health stats = %+v, want 3 timed requests of at least 2 ms", health)
	}

	if err := svc.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Stop(); err != nil {
		t.Fatalf("second Stop = %v, want nil", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitGone := time.Now().Add(5 * time.Second)
	for _, subj := range []string{"x.r1.call", "$SRV.PING.app-dep"} {
		for {
			_, err := nc.Request(subj, nil, time.Second)
			if err == nats.ErrNoResponders {
				break
			}
			if time.Now().After(waitGone) {
				t.Fatalf("%s after Stop: %v, want no responders", subj, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestBadConfig(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	for name, tc := range map[string]struct {
		cfg  Config
		eps  []Endpoint
		want string
	}{
		"name with a dot": {Config{Name: "a.b", Version: "0.1.0"}, nil, `"a.b"`},
		"endpoint without a subject": {Config{Name: "ok", Version: "0.1.0"},
			[]Endpoint{{Name: "call", Handler: func(*nats.Msg) {}}}, `"call"`},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Start(nc, tc.cfg, tc.eps...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
