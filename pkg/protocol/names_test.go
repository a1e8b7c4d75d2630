package protocol_test

import (
	"encoding/base64"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
)

func TestHandlerKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"text.Pipeline", "text.Pipeline"},
		{"diag.Echo", "diag.Echo"},
		{"a/b_c-d=e", "a/b_c-d=e"},
		{"x", "x"},
		{"my handler", "=" + base64.RawURLEncoding.EncodeToString([]byte("my handler"))},
		{".hidden", "=" + base64.RawURLEncoding.EncodeToString([]byte(".hidden"))},
		{"trailing.", "=" + base64.RawURLEncoding.EncodeToString([]byte("trailing."))},
		{"ünï", "=" + base64.RawURLEncoding.EncodeToString([]byte("ünï"))},
	}
	for _, tt := range tests {
		if got := protocol.HandlerKey(tt.in); got != tt.want {
			t.Errorf("HandlerKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
