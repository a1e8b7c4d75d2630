package wiretest_test

import (
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/pkg/wire/wiretest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Echo answers 200 with the request's body, in its queue group too.
func TestEcho(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	wiretest.Echo(t, natstest.Conn(t, ns), "echo.plain", "")
	wiretest.Echo(t, natstest.Conn(t, ns), "echo.queued", "q")
	for _, subject := range []string{"echo.plain", "echo.queued"} {
		req := wire.EncodeRequest(subject, &serve.Request{Method: "POST", Path: "/x", Body: []byte("hello")})
		msg, err := nc.RequestMsg(req, 5*time.Second)
		if err != nil {
			t.Fatalf("request %s: %v", subject, err)
		}
		resp := wire.DecodeResponse(msg)
		if resp.Status != 200 || string(resp.Body) != "hello" {
			t.Errorf("Echo on %s answered %d %q, want 200 %q", subject, resp.Status, resp.Body, "hello")
		}
	}
}
