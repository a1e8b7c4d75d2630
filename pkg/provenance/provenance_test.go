package provenance_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/jetserve/jetserve/pkg/provenance/provenancetest"
	"github.com/nats-io/nkeys"
)

func TestAssignmentSignatures(t *testing.T) {
	account, _ := nkeys.CreateAccount()
	other, _ := nkeys.CreateAccount()
	sched, err := provenance.LoadSigner(provenancetest.Creds(t, account, "scheduler"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.LoadVerifier(provenancetest.Creds(t, account, "worker"), "scheduler")
	if err != nil {
		t.Fatal(err)
	}
	a := protocol.Assignment{WorkerID: "w1", Epoch: 7, Replicas: []protocol.ReplicaSpec{{ID: "r1", App: "a", Deployment: "d",
		CPU: 0.25, UserConfig: json.RawMessage(`{"b": 1, "a": [1, 2]}`)}}}
	if err := sched.SignAssignment(&a); err != nil {
		t.Fatal(err)
	}
	// What the worker reads is the JSON in the bucket.
	b, _ := json.Marshal(a)
	var read protocol.Assignment
	if err := json.Unmarshal(b, &read); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyAssignment(read); err != nil {
		t.Fatalf("VerifyAssignment(signed) = %v", err)
	}

	sign := func(kp nkeys.KeyPair, name string, mod func(*protocol.Assignment)) protocol.Assignment {
		s, err := provenance.LoadSigner(provenancetest.Creds(t, kp, name))
		if err != nil {
			t.Fatal(err)
		}
		x := protocol.Assignment{WorkerID: "w1", Epoch: 7}
		if err := s.SignAssignment(&x); err != nil {
			t.Fatal(err)
		}
		if mod != nil {
			mod(&x)
		}
		return x
	}
	for _, tc := range []struct {
		name string
		a    protocol.Assignment
		want error
	}{
		{"unsigned", protocol.Assignment{WorkerID: "w1", Epoch: 7}, provenance.ErrUnsigned},
		{"by another user of the account (a worker)", sign(account, "worker", nil), provenance.ErrBadWriter},
		{"by a scheduler of another account", sign(other, "scheduler", nil), provenance.ErrBadWriter},
		{"changed after signing (epoch 2^60)", sign(account, "scheduler", func(x *protocol.Assignment) { x.Epoch = 1 << 60 }), provenance.ErrBadSignature},
		{"changed after signing (replicas)", sign(account, "scheduler", func(x *protocol.Assignment) {
			x.Replicas = []protocol.ReplicaSpec{{ID: "evil"}}
		}), provenance.ErrBadSignature},
		{"another writer's JWT on a scheduler's signature", sign(account, "scheduler", func(x *protocol.Assignment) {
			x.WrittenBy = read.WrittenBy
		}), provenance.ErrBadSignature},
	} {
		if _, err := v.VerifyAssignment(tc.a); !errors.Is(err, tc.want) {
			t.Errorf("VerifyAssignment(%s) = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// roundTrip is what a reader gets: the JSON in the bucket, decoded.
func roundTrip[T any](t *testing.T, v T) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func loadSigner(t *testing.T, path string) *provenance.Signer {
	t.Helper()
	s, err := provenance.LoadSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A registration counts only signed by a worker user of the reader's
// account — with a user per worker, the worker's own; a replica record
// only signed by the key of its worker's verified registration.
func TestWorkerAndReplicaSignatures(t *testing.T) {
	account, _ := nkeys.CreateAccount()
	other, _ := nkeys.CreateAccount()
	v, err := provenance.LoadVerifier(provenancetest.Creds(t, account, "scheduler"), "scheduler")
	if err != nil {
		t.Fatal(err)
	}
	w1 := loadSigner(t, provenancetest.Creds(t, account, "w1", provenance.WorkerTag))
	w2 := loadSigner(t, provenancetest.Creds(t, account, "w2", provenance.WorkerTag))
	pool := loadSigner(t, provenancetest.Creds(t, account, provenance.PoolWorker, provenance.WorkerTag))
	ingress := loadSigner(t, provenancetest.Creds(t, account, "ingress"))
	alien := loadSigner(t, provenancetest.Creds(t, other, "w1", provenance.WorkerTag))

	reg := func(s *provenance.Signer, id string, mod func(*protocol.WorkerInfo)) protocol.WorkerInfo {
		w := protocol.WorkerInfo{ID: id, CPU: 2.5, Labels: map[string]string{"zone": "a", "gpu.type": "h100"}, Handlers: []string{"text.Pipeline"},
			Heartbeat: time.Now().UTC()}
		if err := s.SignWorker(&w); err != nil {
			t.Fatal(err)
		}
		if mod != nil {
			mod(&w)
		}
		return roundTrip(t, w)
	}
	for _, tc := range []struct {
		name string
		w    protocol.WorkerInfo
		want error // nil: accepted
	}{
		{"by its own user", reg(w1, "w1", nil), nil},
		{"by the pool user", reg(pool, "w9", nil), nil},
		{"unsigned", protocol.WorkerInfo{ID: "w1"}, provenance.ErrUnsigned},
		{"by another worker's user", reg(w2, "w1", nil), provenance.ErrBadWriter},
		{"by a user that is no worker's", reg(ingress, "w1", nil), provenance.ErrBadWriter},
		{"by a worker of another account", reg(alien, "w1", nil), provenance.ErrBadWriter},
		{"changed after signing", reg(w1, "w1", func(w *protocol.WorkerInfo) { w.CPU = 64 }), provenance.ErrBadSignature},
	} {
		_, err := v.VerifyWorker(tc.w)
		if (tc.want == nil && err != nil) || !errors.Is(err, tc.want) {
			t.Errorf("VerifyWorker(%s) = %v, want %v", tc.name, err, tc.want)
		}
	}

	// Replica records, against the registrations a lookup reads.
	regs := map[string]protocol.WorkerInfo{"w1": reg(w1, "w1", nil), "w2": reg(w2, "w2", nil), "forged": reg(w2, "forged", nil)}
	lookups := 0
	c := provenance.NewReplicas(v, func(_ context.Context, id string) (protocol.WorkerInfo, error) {
		lookups++
		w, ok := regs[id]
		if !ok {
			return w, errors.New("no such worker")
		}
		return w, nil
	})
	var w1Key string
	rec := func(s *provenance.Signer, worker string, mod func(*protocol.ReplicaInfo)) protocol.ReplicaInfo {
		r := protocol.ReplicaInfo{ID: "r1", App: "text", Deployment: "Pipeline", WorkerID: worker, State: protocol.ReplicaRunning,
			Subject: "jetserve.replica.r1", MaxOngoingRequests: 8, Heartbeat: time.Now().UTC()}
		if err := s.SignReplica(&r); err != nil {
			t.Fatal(err)
		}
		if mod != nil {
			mod(&r)
		}
		return roundTrip(t, r)
	}
	w1Key = rec(w1, "w1", nil).Signer
	errNoRegistration := errors.New("no registration")
	for _, tc := range []struct {
		name string
		r    protocol.ReplicaInfo
		want error
	}{
		{"by its worker", rec(w1, "w1", nil), nil},
		{"by its worker, again (the key is kept)", rec(w1, "w1", nil), nil},
		{"unsigned", protocol.ReplicaInfo{ID: "r1", WorkerID: "w1"}, provenance.ErrUnsigned},
		{"by another worker, naming w1", rec(w2, "w1", nil), provenance.ErrBadWriter},
		{"by another worker, naming w1, with w1's key as signer", rec(w2, "w1", func(r *protocol.ReplicaInfo) {
			r.Signer = w1Key
		}), provenance.ErrBadSignature},
		{"changed after signing (subject)", rec(w1, "w1", func(r *protocol.ReplicaInfo) { r.Subject = "attacker.inbox" }), provenance.ErrBadSignature},
		{"of a worker whose registration another worker signed", rec(w2, "forged", nil), provenance.ErrBadWriter},
		{"of a worker with no registration", rec(w1, "gone", nil), errNoRegistration},
	} {
		err := c.Check(context.Background(), tc.r)
		if tc.want == errNoRegistration {
			if err == nil {
				t.Errorf("Check(%s) = nil, want refused", tc.name)
			}
			continue
		}
		if (tc.want == nil && err != nil) || !errors.Is(err, tc.want) {
			t.Errorf("Check(%s) = %v, want %v", tc.name, err, tc.want)
		}
	}
	// w1's registration was read once, then its key kept; the forged
	// signers cost a lookup each (a new signer), never a trust.
	if lookups > 6 {
		t.Errorf("%d registration lookups, want one per worker and new signer", lookups)
	}
}

// The size a signature adds to a record, which every follower of the
// bucket receives on every heartbeat: a replica record carries the
// signer's key and signature only (the user JWT is in the worker's
// registration), a registration and an assignment the JWT too.
func TestSignatureSize(t *testing.T) {
	account, _ := nkeys.CreateAccount()
	path := provenancetest.Creds(t, account, "w1", provenance.WorkerTag)
	s := loadSigner(t, path)
	r := protocol.ReplicaInfo{ID: "text-Pipeline-3f2a1b-0123456789", App: "text", Deployment: "Pipeline", WorkerID: "w1",
		Version: "3f2a1b2c3d4e", State: protocol.ReplicaRunning, MaxOngoingRequests: 8, Subject: "jetserve.replica.text-Pipeline-3f2a1b-0123456789",
		StartedAt: time.Now().UTC(), Heartbeat: time.Now().UTC()}
	plain, _ := json.Marshal(r)
	if err := s.SignReplica(&r); err != nil {
		t.Fatal(err)
	}
	signed, _ := json.Marshal(r)
	w := protocol.WorkerInfo{ID: "w1", CPU: 4, Heartbeat: time.Now().UTC()}
	wplain, _ := json.Marshal(w)
	if err := s.SignWorker(&w); err != nil {
		t.Fatal(err)
	}
	wsigned, _ := json.Marshal(w)
	t.Logf("replica record: %d bytes, signed %d (+%d); registration: %d, signed %d (+%d, the JWT of this test's user: %d)",
		len(plain), len(signed), len(signed)-len(plain), len(wplain), len(wsigned), len(wsigned)-len(wplain), len(w.WrittenBy))
	if extra := len(signed) - len(plain); extra > 200 {
		t.Errorf("signing a replica record adds %d bytes, want at most 200 (no JWT)", extra)
	}
}
