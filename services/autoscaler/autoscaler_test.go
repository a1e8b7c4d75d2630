package autoscaler

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunServesHealthAndObservesLoad(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	cfg := DefaultConfig()
	cfg.OpsAddr = "127.0.0.1:0"
	addrc := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, service.Deps{NC: natstest.Conn(t, ns), Log: zerolog.Nop(), OpsReady: func(a net.Addr) { addrc <- a }})
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case <-time.After(10 * time.Second):
		t.Fatal("ops server did not start")
	}
	base := "http://" + addr.String()
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz = %d %q, want 200", code, body)
	}
	names, _ := protocol.NewNames("")
	b, _ := json.Marshal(protocol.LoadReport{ReplicaID: "r1", App: "a", Deployment: "d", Ongoing: 3, Max: 5})
	want := `jetserve_autoscaler_observed_ongoing_requests{app="a",deployment="d",replica="r1"} 3`
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := nc.Publish(names.LoadSubject("a", "d"), b); err != nil {
			t.Fatal(err)
		}
		_, body := get(t, base+"/metrics")
		if strings.Contains(body, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v, want nil after cancel", err)
	}
}

func TestValidateNamesTheOption(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Log.Level = "loud"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("Validate() = %v, want an error naming log.level", err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
