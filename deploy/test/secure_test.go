package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fleetWorker is the id of the secure fleet's worker, which has a NATS
// user of its own.
const fleetWorker = "fleet-w1"

// The fleet works with every service on its own least-privilege NATS user
// (the worker on its per-worker user, its id taken from that user's JWT)
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
	// The worker took its id from its NATS user's JWT.
	if b, err := f.do(http.MethodGet, f.admin+"/api/serve/applications", "", nil); err != nil || !strings.Contains(b, `"worker_id":"`+fleetWorker+`"`) {
		t.Errorf("no replica on worker %s, the id of its NATS user (%v): %s", fleetWorker, err, b)
	}
	if v := f.violations.Violations(); len(v) > 0 {
		t.Fatalf("the NATS server logged %d permission violations; the first:\n%s", len(v), strings.Join(v[:min(len(v), 10)], "\n"))
	}
}

// Behind the permissions, readers with credentials check who signed the
// workers' registrations and the replica records: a registration or a
// record that a user allowed to write the buckets (here the operator)
// wrote unsigned, or signed as no worker, is ignored — the scheduler lists
// no such worker, and no request reaches the forged replica. The control:
// the same record signed by the worker's own user is routed to.
func TestForgedRecordsIgnored(t *testing.T) {
	f := startFleetWith(t, "testdata/fleet.yaml", fleetOptions{secure: true})
	f.waitFor(t, 90*time.Second, "the echo deployment", func() error {
		_, err := f.do(http.MethodPost, f.ingress+"/echo/", "hi", nil)
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := nats.Connect(f.natsURL, nats.UserCredentials(f.gen.Creds[auth.Operator]), nats.Name("forger"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	names, _ := protocol.NewNames("jetserve")
	b, err := fleetstate.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	sub, err := nc.Subscribe(names.ReplicaSubject("evil")+".>", func(m *nats.Msg) { calls.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // the connection closes
	operator, err := provenance.LoadSigner(f.gen.Creds[auth.Operator])
	if err != nil {
		t.Fatal(err)
	}
	forge := func(sign func(*protocol.ReplicaInfo) error) {
		t.Helper()
		for _, w := range []protocol.WorkerInfo{
			{ID: "evil", CPU: 64, MemoryBytes: 1 << 40, Handlers: []string{"diag.Echo", "text.Trainer"}},
			{ID: "evil-signed", CPU: 64, MemoryBytes: 1 << 40, Handlers: []string{"diag.Echo", "text.Trainer"}},
		} {
			w.Heartbeat = time.Now().UTC()
			if w.ID == "evil-signed" {
				if err := operator.SignWorker(&w); err != nil {
					t.Fatal(err)
				}
			}
			data, _ := json.Marshal(w)
			if _, err := b.Workers.Put(ctx, protocol.WorkerKey(w.ID), data); err != nil {
				t.Fatal(err)
			}
		}
		r := protocol.ReplicaInfo{ID: "evil", App: "echo", Deployment: "Echo", WorkerID: fleetWorker, State: protocol.ReplicaRunning,
			MaxOngoingRequests: 100, Subject: names.ReplicaSubject("evil"), Heartbeat: time.Now().UTC()}
		if sign != nil {
			if err := sign(&r); err != nil {
				t.Fatal(err)
			}
		}
		data, _ := json.Marshal(r)
		if _, err := b.Replicas.Put(ctx, protocol.ReplicaKey(r.App, r.Deployment, r.WorkerID, r.ID), data); err != nil {
			t.Fatal(err)
		}
	}
	send := func(n int) {
		for range n {
			_, _ = f.do(http.MethodPost, f.ingress+"/echo/", "hi", nil)
		}
	}
	for _, sign := range []func(*protocol.ReplicaInfo) error{nil, operator.SignReplica} {
		forge(sign)
		send(40)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the forged replica record took %d requests, want 0", n)
	}
	st, err := f.do(http.MethodGet, f.admin+"/api/serve/applications", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(st, `"evil`) {
		t.Errorf("the status lists a forged worker or replica: %s", st)
	}

	// The control: signed by the worker's own user, the record is real.
	own, err := provenance.LoadSigner(f.gen.Workers[fleetWorker])
	if err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, 30*time.Second, "requests on the record signed by the worker's user", func() error {
		forge(own.SignReplica)
		send(20)
		if calls.Load() == 0 {
			return errors.New("none yet")
		}
		return nil
	})
}
