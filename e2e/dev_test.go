package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
)

// startDev runs the jetserve binary's `dev` (embedded NATS, the five
// services, the example app) on free ports and waits until the example
// answers; it returns the process and the ingress URL.
func startDev(t *testing.T) (*fleet.Proc, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	root, err := fleet.Root(".")
	if err != nil {
		t.Fatal(err)
	}
	p := fleet.StartProc(t, "jetserve-dev", bins.Path(t, fleet.CLI), []string{"dev",
		"--data-dir", filepath.Join(t.TempDir(), "data"), "--nats-port", "-1", "--nats-http-port", "0",
		"--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--ops=false", "--log-level", "warn",
		"--config", filepath.Join(root, "examples", "config.yaml")}, nil)
	// dev listens on port 0 and prints its URLs once up.
	var url string
	fleet.Eventually(t, 90*time.Second, "jetserve dev's URLs", func() error {
		b, err := os.ReadFile(p.Log)
		if err != nil {
			return err
		}
		m := regexp.MustCompile(`HTTP ingress\s+(http://\S+)`).FindSubmatch(b)
		if m == nil {
			if p.Exited() {
				t.Fatalf("jetserve dev exited:\n%s", p.Tail(40))
			}
			return errors.New("not up yet")
		}
		url = string(m[1])
		return nil
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		r, err := fleet.Do(t.Context(), http.MethodPost, url+"/echo/", []byte("hi"), nil)
		if err == nil && r.Status == http.StatusOK {
			return p, url
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("jetserve dev never served /echo/ (last: %v %v):\n%s", r, err, p.Tail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitExit waits up to timeout for p to exit and returns how long it took.
func waitExit(t *testing.T, p *fleet.Proc, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-p.Done():
		return time.Since(start)
	case <-time.After(timeout):
		t.Fatalf("jetserve dev still running %v after the signal:\n%s", timeout, p.Tail(40))
		return 0
	}
}

// TestDevCtrlC: the first Ctrl-C says that the fleet drains and for how
// long, and the process exits 0 (make prints no error); a second Ctrl-C
// stops it at once even while a job runs that would hold the drain for
// its graceful_shutdown_timeout (30 s for the example's Trainer).
func TestDevCtrlC(t *testing.T) {
	t.Run("drains and exits 0", func(t *testing.T) {
		p, _ := startDev(t)
		p.Signal(t, syscall.SIGINT)
		took := waitExit(t, p, 60*time.Second)
		if err := p.ExitErr(); err != nil {
			t.Errorf("jetserve dev after Ctrl-C: %v, want exit status 0:\n%s", err, p.Tail(20))
		}
		if !p.LogContains("draining") || !p.LogContains("up to 30s") || !p.LogContains("Ctrl-C again") {
			t.Errorf("jetserve dev did not say it drains, for how long and how to stop at once:\n%s", p.Tail(20))
		}
		t.Logf("stopped %v after Ctrl-C", took.Round(time.Millisecond))
	})
	t.Run("second Ctrl-C stops at once", func(t *testing.T) {
		p, url := startDev(t)
		id := fmt.Sprintf("dev-ctrlc-%d", time.Now().UnixNano())
		r := fleet.MustDo(t, http.MethodPost, url+"/text/train?num_epochs=200&dataset=synthetic&size=1000000&request_id="+id, nil, nil)
		if r.Status != http.StatusAccepted {
			t.Fatalf("submit a training job = %v, want 202", r)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			r := fleet.MustDo(t, http.MethodGet, url+"/text/train/status?request_id="+id, nil, nil)
			var rec struct{ Status string }
			_ = json.Unmarshal(r.Body, &rec)
			if rec.Status == "RUNNING" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the training job never ran: %v", r)
			}
			time.Sleep(100 * time.Millisecond)
		}
		p.Signal(t, syscall.SIGINT)
		for !p.LogContains("draining") {
			if p.Exited() {
				t.Fatalf("jetserve dev exited before saying it drains:\n%s", p.Tail(20))
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The running job holds the drain (up to its graceful_shutdown_timeout):
		// without a second Ctrl-C the process is still there a second later.
		select {
		case <-p.Done():
			t.Fatalf("jetserve dev exited within 1s of the first Ctrl-C although a job was running:\n%s", p.Tail(20))
		case <-time.After(time.Second):
		}
		p.Signal(t, syscall.SIGINT)
		took := waitExit(t, p, 10*time.Second)
		if took > 5*time.Second {
			t.Errorf("jetserve dev took %v to stop after a second Ctrl-C, want at once", took)
		}
		if err := p.ExitErr(); err != nil {
			t.Errorf("jetserve dev after a second Ctrl-C: %v, want exit status 0", err)
		}
		if !strings.Contains(p.Tail(5), "stopping at once") {
			t.Errorf("jetserve dev did not say it stops at once:\n%s", p.Tail(10))
		}
	})
}
