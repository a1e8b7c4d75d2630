package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/jetserve/jetserve/pkg/provenance/provenancetest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/worker"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
)

// A worker with credentials obeys only assignments signed by its account's
// scheduler: an unsigned one, one signed by another user of the account,
// and a signed one changed afterwards are refused; the real scheduler's
// next one is applied.
func TestOnlySignedAssignmentsObeyed(t *testing.T) {
	account, _ := nkeys.CreateAccount()
	f := startFleet(t, func(c *worker.Config) { c.NATS.Creds = provenancetest.Creds(t, account, "worker") })
	sched, err := provenance.LoadSigner(provenancetest.Creds(t, account, "scheduler"))
	if err != nil {
		t.Fatal(err)
	}
	intruder, err := provenance.LoadSigner(provenancetest.Creds(t, account, "ingress"))
	if err != nil {
		t.Fatal(err)
	}
	put := func(s *provenance.Signer, epoch uint64, mod func(*protocol.Assignment), specs ...protocol.ReplicaSpec) {
		t.Helper()
		f.leaseUpTo(epoch)
		a := protocol.Assignment{WorkerID: workerID, Replicas: specs, Epoch: epoch}
		if s != nil {
			if err := s.SignAssignment(&a); err != nil {
				t.Fatal(err)
			}
		}
		if mod != nil {
			mod(&a)
		}
		b, _ := json.Marshal(a)
		if _, err := f.b.Assignments.Put(context.Background(), protocol.AssignmentKey(workerID), b); err != nil {
			t.Fatal(err)
		}
	}
	real1 := spec("signed1", "echo-dep", "echo", 2, "")
	put(sched, 1, nil, real1)
	f.waitState(real1, protocol.ReplicaRunning)
	// Each of these would stop signed1 and start another, if obeyed.
	put(nil, 2, nil, spec("unsigned1", "echo-dep", "echo", 2, ""))
	put(intruder, 2, nil, spec("intruder1", "echo-dep", "echo", 2, ""))
	put(sched, 2, func(a *protocol.Assignment) {
		a.Replicas = []protocol.ReplicaSpec{spec("tampered1", "echo-dep", "echo", 2, "")}
	})
	// The scheduler's next assignment, applied after them (in order).
	real2 := spec("signed2", "echo-dep", "echo", 2, "")
	put(sched, 3, nil, real1, real2)
	f.waitState(real2, protocol.ReplicaRunning)
	if info, ok := f.record(real1); !ok || info.State != protocol.ReplicaRunning {
		t.Fatalf("signed1 after the refused assignments = %+v (present %v), want still RUNNING", info, ok)
	}
	if n := f.d.count("echo").Load(); n != 2 {
		t.Fatalf("echo constructed %d times, want 2 (signed1 and signed2 only: no refused assignment was obeyed)", n)
	}
}

// A worker on a per-worker NATS user serves that user's id only: another
// configured id is refused before it connects, naming both.
func TestPerWorkerUserServesItsOwnID(t *testing.T) {
	account, _ := nkeys.CreateAccount()
	cfg := worker.DefaultConfig()
	cfg.NATS.URL = "nats://127.0.0.1:1" // never reached
	cfg.NATS.Creds = provenancetest.Creds(t, account, "w9", provenance.WorkerTag)
	cfg.ID = "w1"
	err := worker.Run(context.Background(), cfg, service.Deps{Log: zerolog.Nop()}, serve.NewRegistry())
	if err == nil || !strings.Contains(err.Error(), `"w1"`) || !strings.Contains(err.Error(), `"w9"`) {
		t.Fatalf("Run(id w1, worker w9's user) = %v, want refused naming both", err)
	}
}
