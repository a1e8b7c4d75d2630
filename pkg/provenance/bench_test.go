package provenance_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/jetserve/jetserve/pkg/provenance/provenancetest"
	"github.com/nats-io/nkeys"
)

// BenchmarkReplicaRecord is what a router or the scheduler spends on one
// replica record change (every replica, every heartbeat): decoding it
// (decode, the baseline) against decoding and checking its signature
// (decode+check, the worker's key already kept). Compare the two in one
// run: go test -bench ReplicaRecord -count 5 ./provenance.
func BenchmarkReplicaRecord(b *testing.B) {
	account, _ := nkeys.CreateAccount()
	w1 := provenancetest.Creds(b, account, "w1", provenance.WorkerTag)
	s, err := provenance.LoadSigner(w1)
	if err != nil {
		b.Fatal(err)
	}
	v, err := provenance.LoadVerifier(provenancetest.Creds(b, account, "router"), "")
	if err != nil {
		b.Fatal(err)
	}
	reg := protocol.WorkerInfo{ID: "w1", CPU: 4, Heartbeat: time.Now().UTC()}
	if err := s.SignWorker(&reg); err != nil {
		b.Fatal(err)
	}
	c := provenance.NewReplicas(v, func(context.Context, string) (protocol.WorkerInfo, error) { return reg, nil })
	r := protocol.ReplicaInfo{ID: "text-Pipeline-3f2a1b-0123456789", App: "text", Deployment: "Pipeline", WorkerID: "w1",
		Version: "3f2a1b2c3d4e", State: protocol.ReplicaRunning, MaxOngoingRequests: 8,
		Subject: "jetserve.replica.text-Pipeline-3f2a1b-0123456789", StartedAt: time.Now().UTC(), Heartbeat: time.Now().UTC()}
	if err := s.SignReplica(&r); err != nil {
		b.Fatal(err)
	}
	data, _ := json.Marshal(r)
	ctx := context.Background()
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			var x protocol.ReplicaInfo
			if err := json.Unmarshal(data, &x); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode+check", func(b *testing.B) {
		for b.Loop() {
			var x protocol.ReplicaInfo
			if err := json.Unmarshal(data, &x); err != nil {
				b.Fatal(err)
			}
			if err := c.Check(ctx, x); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			x := r
			if err := s.SignReplica(&x); err != nil {
				b.Fatal(err)
			}
		}
	})
}
