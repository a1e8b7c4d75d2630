package routing

import (
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// A forged replica record that points requests to another subject, or
// claims another deployment under a key, is refused.
func TestCheckRecord(t *testing.T) {
	names, _ := protocol.NewNames("")
	ok := protocol.ReplicaInfo{ID: "r1", App: "text", Deployment: "Pipeline", WorkerID: "w1", Subject: names.ReplicaSubject("r1")}
	key := protocol.ReplicaKey("text", "Pipeline", "w1", "r1")
	if err := CheckRecord(names, key, ok); err != nil {
		t.Fatalf("CheckRecord(a worker's record) = %v", err)
	}
	evil := ok
	evil.Subject = "attacker.inbox"
	if err := CheckRecord(names, key, evil); err == nil || !strings.Contains(err.Error(), "attacker.inbox") {
		t.Errorf("CheckRecord(another subject) = %v, want it refused naming the subject", err)
	}
	other := ok
	other.Subject = names.ReplicaSubject("r9")
	if err := CheckRecord(names, key, other); err == nil {
		t.Error("CheckRecord(another replica's subject) = nil, want refused")
	}
	if err := CheckRecord(names, protocol.ReplicaKey("billing", "Pay", "w1", "r1"), ok); err == nil {
		t.Error("CheckRecord(under another deployment's key) = nil, want refused")
	}
	// Under another worker's key: the record claims a worker whose
	// permissions did not write it.
	if err := CheckRecord(names, protocol.ReplicaKey("text", "Pipeline", "w2", "r1"), ok); err == nil {
		t.Error("CheckRecord(under another worker's key) = nil, want refused")
	}
}
