package test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/nats-io/nats-server/v2/server"
)

// violationLog keeps the permission violations a NATS server logs.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) add(format string, v ...any) {
	if s := fmt.Sprintf(format, v...); strings.Contains(s, "Violation") || strings.Contains(s, "Authorization") {
		l.mu.Lock()
		l.lines = append(l.lines, s)
		l.mu.Unlock()
	}
}
func (l *violationLog) Noticef(f string, v ...any) { l.add(f, v...) }
func (l *violationLog) Warnf(f string, v ...any)   { l.add(f, v...) }
func (l *violationLog) Fatalf(f string, v ...any)  { l.add(f, v...) }
func (l *violationLog) Errorf(f string, v ...any)  { l.add(f, v...) }
func (l *violationLog) Debugf(string, ...any)      {}
func (l *violationLog) Tracef(string, ...any)      {}

func (l *violationLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// startSecureNATS generates the accounts (deploy/auth) and runs a
// JetStream server configured by them, as the compose profile's.
func startSecureNATS(t *testing.T) (*server.Server, *auth.Generated, *violationLog) {
	t.Helper()
	dir := t.TempDir()
	g, err := auth.Generate(auth.Options{Dir: dir, Prefix: "jetserve"})
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("listen: 127.0.0.1:-1\nmax_payload: 8MB\njetstream { store_dir: %q }\ninclude ./%s\n", filepath.Join(dir, "js"), auth.AuthConf)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	l := &violationLog{}
	ns.SetLoggerV2(l, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	return ns, g, l
}

// The fleet works with every service on its own least-privilege NATS user
// and the HTTP keys on: sync requests, autoscaling, multiplexing and a job
// to its end — and the server logs no permissions violation on the way.
func TestFleetUnderLeastPrivilege(t *testing.T) {
	start := time.Now()
	f := startFleetWith(t, "testdata/fleet.yaml", true)
	defer func() { t.Logf("fleet up, traffic and job done in %v", time.Since(start)) }()
	f.waitFor(t, 90*time.Second, "the echo deployment", func() error {
		_, err := f.do(http.MethodPost, f.ingress+"/echo/", "hi", nil)
		return err
	})
	f.waitFor(t, 60*time.Second, "a multiplexed model", func() error {
		_, err := f.do(http.MethodPost, f.ingress+"/mux/", `{"text":"hello"}`, map[string]string{"serve_multiplexed_model_id": "tenant-a"})
		return err
	})
	if _, err := f.do(http.MethodPost, f.ingress+"/text/train?request_id=s1&num_epochs=1", "", nil); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, 60*time.Second, "job s1 SUCCEEDED", func() error {
		b, err := f.do(http.MethodGet, f.ingress+"/text/train/status?request_id=s1", "", nil)
		if err == nil && !strings.Contains(b, `"SUCCEEDED"`) {
			err = errors.New(b)
		}
		return err
	})
	if _, err := f.do(http.MethodPost, f.ingress+"/text/train/cancel?request_id=s1", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.do(http.MethodGet, f.ingress+"/text/train/list", "", nil); err != nil {
		t.Fatal(err)
	}
	// A workflow (the Trainer's retrain pipeline): its journal, the
	// training job it awaits suspended, the wakers and its history run
	// under the workers' and the ingress's permissions.
	if _, err := f.do(http.MethodPost, f.ingress+"/text/retrain?request_id=w1", `{"num_epochs":1,"min_heldout":0.01}`, nil); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, 60*time.Second, "workflow w1 SUCCEEDED", func() error {
		b, err := f.do(http.MethodGet, f.ingress+"/text/retrain/status?request_id=w1", "", nil)
		if err == nil && !strings.Contains(b, `"SUCCEEDED"`) {
			err = errors.New(b)
		}
		return err
	})
	if b, err := f.do(http.MethodGet, f.ingress+"/text/retrain/history?request_id=w1", "", nil); err != nil || !strings.Contains(b, `"promote"`) {
		t.Errorf("GET history of w1 = %s, %v; want the promote step", b, err)
	}
	if _, err := f.do(http.MethodGet, f.admin+"/api/dashboard", "", nil); err != nil {
		t.Fatal(err)
	}
	// A graph's live split: published by the ingress, summed by the
	// scheduler.
	f.waitFor(t, 60*time.Second, "the splitter's live counts in the status", func() error {
		if _, err := f.do(http.MethodPost, f.ingress+"/split/", "hi", nil); err != nil {
			return err
		}
		b, err := f.do(http.MethodGet, f.admin+"/api/serve/applications", "", nil)
		if err == nil && !regexp.MustCompile(`"splitters":\[\{"node":"root","window_seconds":\d+,"requests":[1-9]`).MatchString(b) {
			err = fmt.Errorf("no live split yet: %s", b)
		}
		return err
	})
	// Without the keys: refused.
	key := f.apiKey
	f.apiKey = ""
	if _, err := f.do(http.MethodPost, f.ingress+"/echo/", "hi", nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("POST /echo/ without a key = %v, want 401", err)
	}
	f.apiKey = key
	// Status, heartbeats, load reports and scale decisions run under the
	// permissions too: wait until the leader reports every app RUNNING.
	f.waitFor(t, 60*time.Second, "every application RUNNING", func() error {
		b, err := f.do(http.MethodGet, f.admin+"/api/serve/applications", "", nil)
		if err == nil && (strings.Count(b, `"status":"RUNNING"`) < 4 || strings.Contains(b, `"DEPLOYING"`)) {
			err = errors.New(b)
		}
		return err
	})
	if v := f.violations.all(); len(v) > 0 {
		t.Fatalf("the NATS server logged %d permission violations; the first:\n%s", len(v), strings.Join(v[:min(len(v), 10)], "\n"))
	}
}
