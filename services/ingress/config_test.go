package ingress

import (
	"strings"
	"testing"
	"time"
)

// TestConfigValidateNamesTheOption: each bad option is refused at start-up
// with its key named.
func TestConfigValidateNamesTheOption(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v, want nil", err)
	}
	tests := []struct {
		key string
		set func(*Config)
	}{
		{"oip_ready_timeout", func(c *Config) { c.OIPReadyTimeout = 0 }},
		{"oip_ready_timeout", func(c *Config) { c.OIPReadyTimeout = -time.Second }},
		{"max_body_bytes", func(c *Config) { c.MaxBodyBytes = 0 }},
		{"router", func(c *Config) { c.Router = "remote" }},
		{"body_stall_timeout", func(c *Config) { c.BodyStallTimeout = 0 }},
		{"body_stall_timeout", func(c *Config) { c.BodyStallTimeout = -time.Second }},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		tt.set(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.key+":") {
			t.Errorf("Validate() with a bad %s = %v, want an error naming it", tt.key, err)
		}
	}
}
