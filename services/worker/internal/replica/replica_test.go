package replica

import (
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestInPlaceAndSameSpec(t *testing.T) {
	base := protocol.ReplicaSpec{
		ID: "r1", App: "a", Deployment: "d", Handler: "h", Version: "v1",
		UserConfig: json.RawMessage(`{"a": 1}`), MaxOngoingRequests: 5, CPU: 1, GPUIndices: []int{0},
		GracefulShutdownTimeout: config.Duration(time.Second),
	}
	tests := []struct {
		name           string
		mutate         func(*protocol.ReplicaSpec)
		inPlace, equal bool
	}{
		{"identical", func(*protocol.ReplicaSpec) {}, true, true},
		{"json spacing only", func(s *protocol.ReplicaSpec) { s.UserConfig = json.RawMessage(`{"a":1}`) }, true, true},
		{"user_config", func(s *protocol.ReplicaSpec) { s.UserConfig = json.RawMessage(`{"a":2}`) }, true, false},
		{"max_ongoing", func(s *protocol.ReplicaSpec) { s.MaxOngoingRequests = 9 }, true, false},
		{"graceful timeout", func(s *protocol.ReplicaSpec) { s.GracefulShutdownTimeout = 0 }, true, false},
		{"async_methods", func(s *protocol.ReplicaSpec) { s.AsyncMethods = []config.AsyncMethod{{Name: "train"}} }, true, false},
		{"empty async_methods", func(s *protocol.ReplicaSpec) { s.AsyncMethods = []config.AsyncMethod{} }, true, true},
		{"pinned_only", func(s *protocol.ReplicaSpec) { s.PinnedOnly = true }, true, false},
		{"version", func(s *protocol.ReplicaSpec) { s.Version = "v2" }, false, false},
		{"gpus", func(s *protocol.ReplicaSpec) { s.GPUIndices = []int{1} }, false, false},
		{"handler", func(s *protocol.ReplicaSpec) { s.Handler = "other" }, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := base
			next.GPUIndices = append([]int(nil), base.GPUIndices...)
			tt.mutate(&next)
			if got := InPlace(base, next); got != tt.inPlace {
				t.Errorf("InPlace = %v, want %v", got, tt.inPlace)
			}
			if got := SameSpec(base, next); got != tt.equal {
				t.Errorf("SameSpec = %v, want %v", got, tt.equal)
			}
		})
	}
}
