package protocol_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

func TestReplicaSpecConfigVersion(t *testing.T) {
	base := protocol.ReplicaSpec{ID: "r1", App: "a", Deployment: "d", Handler: "h", Version: "v1",
		UserConfig: json.RawMessage(`{"k": 1}`), MaxOngoingRequests: 5, CPU: 1, GracefulShutdownTimeout: config.Duration(time.Second),
		AsyncMethods: []config.AsyncMethod{{Name: "train", MaxQueued: 10}}}
	tests := []struct {
		name   string
		change func(s *protocol.ReplicaSpec)
		same   bool
	}{
		{"user_config spacing", func(s *protocol.ReplicaSpec) { s.UserConfig = json.RawMessage(`{"k":1}`) }, true},
		{"identity and resources", func(s *protocol.ReplicaSpec) { s.ID, s.Version, s.CPU, s.GPUIndices = "r2", "v2", 2, []int{0} }, true},
		{"user_config", func(s *protocol.ReplicaSpec) { s.UserConfig = json.RawMessage(`{"k":2}`) }, false},
		{"max_ongoing_requests", func(s *protocol.ReplicaSpec) { s.MaxOngoingRequests = 6 }, false},
		{"graceful_shutdown_timeout", func(s *protocol.ReplicaSpec) { s.GracefulShutdownTimeout = config.Duration(time.Minute) }, false},
		{"async_methods", func(s *protocol.ReplicaSpec) { s.AsyncMethods[0].MaxQueued = 5 }, false},
		{"no async_methods", func(s *protocol.ReplicaSpec) { s.AsyncMethods = nil }, false},
	}
	for _, tt := range tests {
		s := base
		s.AsyncMethods = slices.Clone(base.AsyncMethods)
		tt.change(&s)
		if got := s.ConfigVersion() == base.ConfigVersion(); got != tt.same {
			t.Errorf("ConfigVersion unchanged after %s = %v, want %v", tt.name, got, tt.same)
		}
	}
}
