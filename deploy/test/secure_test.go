package test

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The fleet works with every service on its own least-privilege NATS user
// and the HTTP keys on: sync requests, autoscaling, multiplexing and a job
// to its end — and the server logs no permissions violation on the way.
func TestFleetUnderLeastPrivilege(t *testing.T) {
	start := time.Now()
	f := startFleetWith(t, "testdata/fleet.yaml", fleetOptions{secure: true})
	defer func() { t.Logf("fleet up, traffic and job done in %v", time.Since(start)) }()
	f.waitServing(t)
	// A body larger than one message (max_payload 8 MB here) both ways,
	// through the bodies object store, under the ingress's and the
	// worker's permissions.
	big := strings.Repeat("b", 9<<20)
	f.waitFor(t, 60*time.Second, "a 9 MiB echo", func() error {
		got, err := f.do(http.MethodPost, f.ingress+"/large/", big, nil)
		if err == nil && len(got) != len(big) {
			err = fmt.Errorf("%d bytes back, want %d", len(got), len(big))
		}
		return err
	})
	f.trainJob(t, "s1")
	if _, err := f.do(http.MethodPost, f.ingress+"/text/train/cancel?request_id=s1", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.do(http.MethodGet, f.ingress+"/text/train/list", "", nil); err != nil {
		t.Fatal(err)
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
	if v := f.violations.Violations(); len(v) > 0 {
		t.Fatalf("the NATS server logged %d permission violations; the first:\n%s", len(v), strings.Join(v[:min(len(v), 10)], "\n"))
	}
}
