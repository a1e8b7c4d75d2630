package provenance_test

import (
	"encoding/json"
	"errors"
	"testing"

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
