package diag

import (
	"context"
	"net/url"
	"testing"

	"github.com/jetserve/jetserve/pkg/serve"
)

func TestEchoSizeAndLen(t *testing.T) {
	e := &Echo{replica: "r"}
	for _, tt := range []struct {
		query, body, want string
	}{
		{"", "hello", "hello"},
		{"size=3", "hello", "xxx"},
		{"size=0", "hello", ""},
		{"len=1", "hello", "5"},
		{"size=bad", "hello", "hello"},
	} {
		q, _ := url.ParseQuery(tt.query)
		resp, err := e.ServeRequest(context.Background(), &serve.Request{Query: q, Body: []byte(tt.body)})
		if err != nil || string(resp.Body) != tt.want {
			t.Errorf("Echo(%q, %q) = %q, %v; want %q", tt.query, tt.body, resp.Body, err, tt.want)
		}
	}
}
