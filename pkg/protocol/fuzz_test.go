package protocol_test

import (
	"encoding/json"
	"testing"

	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// messageTypes makes a fresh value of every message a service decodes
// from NATS (KV values and published messages).
var messageTypes = map[string]func() any{
	"WorkerInfo":    func() any { return &protocol.WorkerInfo{} },
	"Assignment":    func() any { return &protocol.Assignment{} },
	"ReplicaInfo":   func() any { return &protocol.ReplicaInfo{} },
	"LoadReport":    func() any { return &protocol.LoadReport{} },
	"RouterStats":   func() any { return &protocol.RouterStats{} },
	"GraphStats":    func() any { return &protocol.GraphStats{} },
	"Status":        func() any { return &protocol.Status{} },
	"Lease":         func() any { return &protocol.Lease{} },
	"ScaleDecision": func() any { return &protocol.ScaleDecision{} },
	"JobRecord":     func() any { return &jobs.Record{} },
}

// FuzzMessages: every NATS message decoder either refuses a payload or
// decodes it into a value that encodes and decodes back to itself (what a
// service re-publishes is what it read).
func FuzzMessages(f *testing.F) {
	for _, s := range []string{
		`{"id":"w1","host":"h","cpu":2,"memory_bytes":1024,"gpus":[{"index":0,"type":"h100"}],"handlers":["a"],"runtimes":["go","process"],"started_at":"2026-01-01T00:00:00Z","heartbeat":"2026-01-01T00:00:01Z"}`,
		`{"worker_id":"w1","epoch":3,"replicas":[{"id":"r","app":"a","deployment":"d","handler":"h","version":"v","max_ongoing_requests":5,"cpu":0.5,"graceful_shutdown_timeout":"20s","runtime":"process","process":{"command":["x"],"health_path":"/","protocol":"http","startup_timeout":"1m"}}]}`,
		`{"replica_id":"r","app":"a","deployment":"d","ongoing":3,"max":5,"models":["m1","m2"],"at":"2026-01-01T00:00:00Z"}`,
		`{"router_id":"x","queued":{"a/d":2},"at":"2026-01-01T00:00:00Z"}`,
		`{"ingress_id":"i","splits":{"a":{"root":{"v1":95,"v2":5}}},"window_seconds":60,"at":"2026-01-01T00:00:00Z"}`,
		`{"app":"a","deployment":"d","desired":2,"reason":"upscale","epoch":1,"at":"2026-01-01T00:00:00Z"}`,
		`{"leader":"s","applications":{"a":{"name":"a","deployments":{"d":{"name":"d","pending_reasons":[{"code":"no_room","need":{"cpu":1,"labels":{"zone":"a"}},"short":["cpu"]}],"replicas":[{"replica_id":"r","state":"PENDING","reason":{"code":"no_workers","need":{"handler":"h","cpu":1}}},{"replica_id":"s","state":"STOPPING","reason":{"code":"start_timeout","timeout":"1m0s"}}]}}}}}`,
		`{"id":"j","status":"RUNNING","attempt":1,"args":{"n":5}}`,
		`{"graceful_shutdown_timeout": 1e400}`,
		`{"at": "not a time"}`,
		`[]`, `null`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for name, mk := range messageTypes {
			v := mk()
			if err := json.Unmarshal(data, v); err != nil {
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				// A decoded value that cannot be encoded would stop a
				// service that re-publishes it.
				t.Fatalf("%s decoded from %q does not encode: %v", name, data, err)
			}
			w := mk()
			if err := json.Unmarshal(b, w); err != nil {
				t.Fatalf("%s: its own encoding %s does not decode: %v", name, b, err)
			}
			if b2, _ := json.Marshal(w); string(b2) != string(b) {
				t.Fatalf("%s: round trip changed it:\n%s\n%s", name, b, b2)
			}
		}
	})
}
