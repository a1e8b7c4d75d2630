package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/jetserve/jetserve/deploy/auth/authtest"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

type env struct {
	dir   string
	gen   *auth.Generated
	ns    *server.Server
	log   *authtest.Log
	names protocol.Names
}

// start generates the accounts and runs a JetStream server configured by
// the generated auth.conf, included from a config file as in production.
func start(t *testing.T) *env {
	t.Helper()
	srv := authtest.Start(t, "wa", "wb")
	names, _ := protocol.NewNames("jetserve")
	return &env{dir: srv.Dir, gen: srv.Gen, ns: srv.NS, log: srv.Log, names: names}
}

func (e *env) conn(t *testing.T, role string) *nats.Conn {
	t.Helper()
	return e.connect(t, role, e.gen.Creds[role])
}

// workerConn connects as the per-worker user of worker id (named id).
func (e *env) workerConn(t *testing.T, id string) *nats.Conn {
	t.Helper()
	return e.connect(t, id, e.gen.Workers[id])
}

func (e *env) connect(t *testing.T, role, creds string) *nats.Conn {
	t.Helper()
	nc, err := service.Connect(context.Background(), service.NATSConfig{URL: e.ns.ClientURL(), Creds: creds}, role, zerolog.Nop())
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	t.Cleanup(cancel)
	return c
}

// quick bounds one forgery: a refused publish gets no acknowledgement, so
// it ends at this deadline (the refusal itself is asserted in the server's
// log).
func quick(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Second)
	t.Cleanup(cancel)
	return c
}

// setup creates the fleet's buckets and a job method text/train as the
// operator, with one queued job and one record.
func (e *env) setup(t *testing.T) (*fleetstate.Buckets, jobs.Names) {
	t.Helper()
	nc := e.conn(t, auth.Operator)
	js, _ := jetstream.New(nc)
	b, err := fleetstate.Open(ctx(t), js, e.names)
	if err != nil {
		t.Fatal(err)
	}
	jn := jobs.Names{Names: e.names}
	q := jobs.NewQueue(js, jn, zerolog.Nop())
	m := config.AsyncMethod{Name: "train"}
	if _, _, err := q.Submit(ctx(t), "text", "Trainer", m, "job1", nil, jobs.Owner("key:alice")); err != nil {
		t.Fatal(err)
	}
	if err := q.Ensure(ctx(t), "text", "Trainer", config.AsyncMethod{Name: "flow", Workflow: true}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx(t), jn.Records("text", "train"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx(t), "done1", []byte(`{"request_id":"done1","status":"SUCCEEDED","owner":"key:alice"}`)); err != nil {
		t.Fatal(err)
	}
	return b, jn
}

// Every forgery of the table, by every service user that is not
// the subject's owner, fails with a permissions violation that the server
// logs, and changes nothing; the owners' own writes go through.
func TestForgeriesRefused(t *testing.T) {
	e := start(t)
	b, jn := e.setup(t)
	replica, _ := json.Marshal(protocol.ReplicaInfo{ID: "evil", App: "text", Deployment: "Pipeline", WorkerID: "w1",
		State: protocol.ReplicaRunning, MaxOngoingRequests: 100, Subject: e.names.ReplicaSubject("evil"), Heartbeat: time.Now()})
	worker, _ := json.Marshal(protocol.WorkerInfo{ID: "evil", CPU: 64, Handlers: []string{"text.Pipeline"}, Heartbeat: time.Now()})
	assignment, _ := json.Marshal(protocol.Assignment{WorkerID: "w1", Epoch: 1 << 60})
	job, _ := json.Marshal(jobs.Record{ID: "forged", App: "text", Method: "train", Status: jobs.Queued})
	record := []byte(`{"request_id":"done1","status":"SUCCEEDED","result":"forged"}`)

	var n atomic.Int64
	opJS0, _ := jetstream.New(e.conn(t, auth.Operator))
	as, err := opJS0.Stream(ctx(t), "KV_"+e.names.BucketAssignments())
	if err != nil {
		t.Fatal(err)
	}
	republish := as.CachedInfo().Config
	republish.RePublish = &jetstream.RePublish{Source: ">", Destination: "evil.>"}
	type forgery struct {
		name    string
		subject string // what the server must log
		owners  []string
		try     func(nc *nats.Conn, js jetstream.JetStream) error
	}
	put := func(bucket, key string, v []byte) func(*nats.Conn, jetstream.JetStream) error {
		return func(_ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(quick(t), "$KV."+bucket+"."+key, v)
			return err
		}
	}
	forgeries := []forgery{
		{"forge a replica record", "$KV." + e.names.BucketReplicas(), []string{auth.Worker},
			put(e.names.BucketReplicas(), protocol.ReplicaKey("text", "Pipeline", "w1", "evil"), replica)},
		{"forge a worker", "$KV." + e.names.BucketWorkers(), []string{auth.Worker}, put(e.names.BucketWorkers(), protocol.WorkerKey("evil"), worker)},
		{"forge an assignment", "$KV." + e.names.BucketAssignments(), []string{auth.Scheduler},
			put(e.names.BucketAssignments(), "w1", assignment)},
		{"forge a scale decision", "$KV." + e.names.BucketScale(), []string{auth.Autoscaler},
			put(e.names.BucketScale(), protocol.ScaleKey("text", "Pipeline"), []byte(`{"desired":100}`))},
		{"rewrite the applied config", "$KV." + e.names.BucketApps(), []string{auth.Scheduler},
			put(e.names.BucketApps(), "config", []byte(`{"applications":[]}`))},
		{"publish a job straight to a job stream", jn.JobSubject("text", "train", "forged"), []string{auth.Ingress, auth.Worker},
			func(_ *nats.Conn, js jetstream.JetStream) error {
				// One subject per try: the stream holds one message per job id.
				_, err := js.Publish(quick(t), jn.JobSubject("text", "train", fmt.Sprintf("forged-%d", n.Add(1))), job)
				return err
			}},
		{"overwrite another caller's job record", "$KV." + jn.Records("text", "train"), []string{auth.Ingress, auth.Worker},
			put(jn.Records("text", "train"), "done1", record)},
		{"delete a job record", "$KV." + jn.Records("text", "train"), []string{auth.Ingress, auth.Worker},
			func(_ *nats.Conn, js jetstream.JetStream) error {
				_, err := js.PublishMsg(quick(t), &nats.Msg{Subject: "$KV." + jn.Records("text", "train") + ".done1",
					Header: nats.Header{"KV-Operation": []string{"DEL"}}})
				return err
			}},
		{"purge a job stream", "$JS.API.STREAM.PURGE." + jn.Stream("text", "train"), nil,
			func(nc *nats.Conn, _ jetstream.JetStream) error {
				_, err := nc.Request("$JS.API.STREAM.PURGE."+jn.Stream("text", "train"), nil, time.Second)
				return err
			}},
		{"delete a job message", "$JS.API.STREAM.MSG.DELETE." + jn.Stream("text", "train"), nil,
			func(nc *nats.Conn, _ jetstream.JetStream) error {
				_, err := nc.Request("$JS.API.STREAM.MSG.DELETE."+jn.Stream("text", "train"), []byte(`{"seq":1}`), time.Second)
				return err
			}},
		// NATS checks no permission on a stream's sources or republish:
		// only the scheduler, which writes the assignments, may create or
		// update a stream (it creates the job streams).
		{"create a stream sourcing the assignments", "$JS.API.STREAM.CREATE.", []string{auth.Scheduler},
			func(_ *nats.Conn, js jetstream.JetStream) error {
				_, err := js.CreateStream(quick(t), jetstream.StreamConfig{Name: fmt.Sprintf("EVIL_%d", n.Add(1)),
					Sources: []*jetstream.StreamSource{{Name: "KV_" + e.names.BucketAssignments()}}})
				return err
			}},
		{"update the assignments' stream to republish", "$JS.API.STREAM.UPDATE.KV_" + e.names.BucketAssignments(), []string{auth.Scheduler},
			func(_ *nats.Conn, js jetstream.JetStream) error {
				_, err := js.UpdateStream(quick(t), republish)
				return err
			}},
		{"create a job stream", "$JS.API.STREAM.CREATE." + jn.Stream("text", "other"), []string{auth.Scheduler},
			func(_ *nats.Conn, js jetstream.JetStream) error {
				_, err := js.CreateStream(quick(t), jetstream.StreamConfig{Name: jn.Stream("text", "other"), Subjects: []string{jn.JobWildcard("text", "other")}})
				if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
					err = nil // (the owner's second try)
				}
				return err
			}},
		{"delete a job stream", "$JS.API.STREAM.DELETE." + jn.Stream("text", "train"), nil,
			func(nc *nats.Conn, _ jetstream.JetStream) error {
				_, err := nc.Request("$JS.API.STREAM.DELETE."+jn.Stream("text", "train"), nil, time.Second)
				return err
			}},
		{"forge a workflow run's journal entry", jn.WorkflowSubject("text", "flow", "r1", "j"), []string{auth.Worker},
			func(_ *nats.Conn, js jetstream.JetStream) error {
				_, err := js.Publish(quick(t), jn.WorkflowSubject("text", "flow", "r1", "j"), []byte(`{"pos":0,"kind":"step","name":"forged"}`))
				return err
			}},
		{"subscribe to every subject", ">", nil,
			func(nc *nats.Conn, _ jetstream.JetStream) error { return subscribeDenied(nc, ">") }},
		{"read other services' replies", "_INBOX.>", nil,
			func(nc *nats.Conn, _ jetstream.JetStream) error { return subscribeDenied(nc, "_INBOX.>") }},
	}
	roles := append(append([]string(nil), auth.Services...), auth.Deployment)
	t.Run("refused", func(t *testing.T) {
		for _, f := range forgeries {
			for _, role := range roles {
				owner := false
				for _, o := range f.owners {
					owner = owner || o == role
				}
				if owner {
					continue
				}
				t.Run(f.name+"/as "+role, func(t *testing.T) {
					t.Parallel()
					nc := e.conn(t, role)
					js, _ := jetstream.New(nc)
					err := f.try(nc, js)
					if err == nil {
						t.Fatalf("%s as %s succeeded, want a permissions violation", f.name, role)
					}
					if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") && !errors.Is(err, nats.ErrTimeout) &&
						!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
						t.Errorf("%s as %s = %v, want a permissions violation", f.name, role, err)
					}
					waitLogged(t, e.log, f.subject, role)
				})
			}
		}
	})

	// Nothing changed.
	c := ctx(t)
	if _, err := b.Replicas.Get(c, protocol.ReplicaKey("text", "Pipeline", "w1", "evil")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the forged replica record exists (%v)", err)
	}
	if _, err := b.Workers.Get(c, protocol.WorkerKey("evil")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the forged worker exists (%v)", err)
	}
	opNC := e.conn(t, auth.Operator)
	opJS, _ := jetstream.New(opNC)
	kv, _ := opJS.KeyValue(c, jn.Records("text", "train"))
	if ent, err := kv.Get(c, "done1"); err != nil || strings.Contains(string(ent.Value()), "forged") {
		t.Errorf("the job record was overwritten or deleted: %v", err)
	}
	st, _ := opJS.Stream(c, jn.Stream("text", "train"))
	if info, err := st.Info(c); err != nil || info.State.Msgs != 1 { // the owners' publishes below come after
		t.Errorf("the job stream holds %v messages (%v), want the one queued job", info, err)
	}

	// The owners' writes go through: the refusals above are permissions,
	// not a broken setup.
	for _, f := range forgeries {
		for _, role := range f.owners {
			nc := e.conn(t, role)
			js, _ := jetstream.New(nc)
			if err := f.try(nc, js); err != nil {
				t.Errorf("%s as its owner %s = %v, want nil", f.name, role, err)
			}
		}
	}
}

// subscribeDenied subscribes and waits for the server's refusal (an
// asynchronous permissions violation); nil if it never comes.
func subscribeDenied(nc *nats.Conn, subject string) error {
	errc := make(chan error, 1)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errc <- err:
		default:
		}
	})
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	_ = nc.Flush()
	select {
	case err := <-errc:
		return err
	case <-time.After(time.Second):
		return nil
	}
}

func waitLogged(t *testing.T, l *authtest.Log, subject, client string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !l.HasViolation(subject, client) {
		if time.Now().After(deadline) {
			t.Fatalf("the server logged no violation of %s naming %q", client, subject)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Without credentials nobody connects; the generator keeps what exists.
func TestNoCredentialNoConnection(t *testing.T) {
	e := start(t)
	if nc, err := nats.Connect(e.ns.ClientURL(), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a connection without credentials was accepted")
	}
}

// A revoked user is refused once the server reloads; a new user of the
// same role, issued by re-running the generator, connects.
func TestRevokeAndReissue(t *testing.T) {
	e := start(t)
	old := e.conn(t, auth.Router)
	old.Close()
	b, err := os.ReadFile(e.gen.Creds[auth.Router])
	if err != nil {
		t.Fatal(err)
	}
	token, _ := jwt.ParseDecoratedJWT(b)
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(t.TempDir(), "old-router.creds")
	if err := os.WriteFile(saved, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.gen.Creds[auth.Router]); err != nil { // re-issued below
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(e.dir, auth.AuthConf))
	if err != nil {
		t.Fatal(err)
	}
	// A JWT's issue time has a resolution of a second: re-run in the
	// next one, so that a re-signed operator would differ.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	if _, err := auth.Generate(auth.Options{Dir: e.dir, Prefix: "jetserve", Revoke: []string{uc.Subject}}); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(e.dir, auth.AuthConf))
	if err != nil {
		t.Fatal(err)
	}
	if operatorLine(before) != operatorLine(after) {
		t.Fatalf("re-running the generator re-signed the operator (nats-server cannot reload it):\n%s\n%s", operatorLine(before), operatorLine(after))
	}
	if err := e.ns.Reload(); err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(e.ns.ClientURL(), nats.UserCredentials(saved), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("the revoked router user still connects")
	}
	e.conn(t, auth.Router) // the re-issued one
	if _, err := auth.Generate(auth.Options{Dir: e.dir, Revoke: []string{"not-a-key"}}); err == nil {
		t.Fatal("Generate(Revoke: not-a-key) = nil, want an error")
	}
}

func operatorLine(conf []byte) string {
	for _, line := range strings.Split(string(conf), "\n") {
		if strings.HasPrefix(line, "operator: ") {
			return line
		}
	}
	return ""
}

// A worker with a user of its own reads only its own assignment and writes
// only its own registration and replicas' records: worker wa's every way
// to read wb's assignment (a get, a watch, a watch of all, the forms with
// the key in the request's body) or to write wb's registration or
// replicas, or a key outside any worker's, fails with a permissions
// violation that the server logs by wa — and wa's own do not. The shared
// pool user ("worker") may still do both (weaker, for compatibility).
func TestWorkerForgeriesRefused(t *testing.T) {
	e := start(t)
	b, jn := e.setup(t)
	for _, id := range []string{"wa", "wb"} {
		a, _ := json.Marshal(protocol.Assignment{WorkerID: id, Epoch: 1})
		if _, err := b.Assignments.Put(ctx(t), protocol.AssignmentKey(id), a); err != nil {
			t.Fatal(err)
		}
	}
	ab := e.names.BucketAssignments()
	as := "KV_" + ab
	theirs := "$KV." + ab + "." + protocol.AssignmentKey("wb")
	kv := func(t *testing.T, js jetstream.JetStream, bucket string) jetstream.KeyValue {
		t.Helper()
		kv, err := js.KeyValue(ctx(t), bucket)
		if err != nil {
			t.Fatalf("bind %s: %v", bucket, err)
		}
		return kv
	}
	watch := func(keys ...string) func(*nats.Conn, jetstream.JetStream) error {
		return func(_ *nats.Conn, js jetstream.JetStream) error {
			w, err := kv(t, js, ab).WatchFiltered(quick(t), keys)
			if err != nil {
				return err
			}
			defer w.Stop() //nolint:errcheck // a test's watch
			select {
			case e := <-w.Updates():
				if e != nil {
					return fmt.Errorf("read %s", e.Key())
				}
				return nil
			case <-time.After(time.Second):
				return context.DeadlineExceeded
			}
		}
	}
	request := func(subject, body string) func(*nats.Conn, jetstream.JetStream) error {
		return func(nc *nats.Conn, _ jetstream.JetStream) error {
			m, err := nc.Request(subject, []byte(body), time.Second)
			if err != nil {
				return err
			}
			return fmt.Errorf("answered: %s", m.Data)
		}
	}
	put := func(bucket, key string) func(*nats.Conn, jetstream.JetStream) error {
		return func(_ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(quick(t), "$KV."+bucket+"."+key, []byte(`{"id":"wb","worker_id":"wb"}`))
			return err
		}
	}
	// wb's watch consumer, were it a pull consumer (as before), and the
	// scheduler's (every key): wa pulls from them by name.
	opJS, _ := jetstream.New(e.conn(t, auth.Operator))
	for name, filter := range map[string]string{"wbwatch": theirs, "schedwatch": "$KV." + ab + ".>"} {
		if _, err := opJS.CreateConsumer(ctx(t), as, jetstream.ConsumerConfig{Name: name, FilterSubject: filter,
			AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	pull := func(consumer string) func(*nats.Conn, jetstream.JetStream) error {
		return func(_ *nats.Conn, js jetstream.JetStream) error {
			c, err := js.Consumer(quick(t), as, consumer)
			if err != nil {
				return err
			}
			b, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				return err
			}
			for m := range b.Messages() {
				return fmt.Errorf("read %s", m.Subject())
			}
			if err := b.Error(); err != nil {
				return err
			}
			return context.DeadlineExceeded // nothing came (the pull was refused)
		}
	}
	filter := `{"stream_name":"` + as + `","config":{"filter_subject":"` + theirs + `","deliver_policy":"last_per_subject","ack_policy":"none","deliver_subject":"_INBOX.wa.x"}}`
	wk, rk := e.names.BucketWorkers(), e.names.BucketReplicas()
	forgeries := []struct {
		name, subject string // what the server must log
		try           func(*nats.Conn, jetstream.JetStream) error
	}{
		{"get another worker's assignment", "$JS.API.DIRECT.GET." + as + "." + theirs,
			func(_ *nats.Conn, js jetstream.JetStream) error {
				_, err := kv(t, js, ab).Get(quick(t), protocol.AssignmentKey("wb"))
				return err
			}},
		{"watch another worker's assignment", "$JS.API.CONSUMER.CREATE." + as, watch(protocol.AssignmentKey("wb"))},
		{"watch every assignment (*)", "$JS.API.CONSUMER.CREATE." + as, watch("*.assignment")},
		{"watch every assignment (>)", "$JS.API.CONSUMER.CREATE." + as, watch(">")},
		{"direct get with the key in the body", "$JS.API.DIRECT.GET." + as, request("$JS.API.DIRECT.GET."+as, `{"last_by_subj":"`+theirs+`"}`)},
		{"stream message get", "$JS.API.STREAM.MSG.GET." + as, request("$JS.API.STREAM.MSG.GET."+as, `{"last_by_subj":"`+theirs+`"}`)},
		{"consumer, filter in the body", "$JS.API.CONSUMER.CREATE." + as + ".x", request("$JS.API.CONSUMER.CREATE."+as+".x", filter)},
		{"legacy consumer create", "$JS.API.CONSUMER.CREATE." + as, request("$JS.API.CONSUMER.CREATE."+as, filter)},
		{"durable consumer create", "$JS.API.CONSUMER.DURABLE.CREATE." + as, request("$JS.API.CONSUMER.DURABLE.CREATE."+as+".x", filter)},
		{"purge the assignments", "$JS.API.STREAM.PURGE." + as, request("$JS.API.STREAM.PURGE."+as, "")},
		{"pull from another worker's consumer", "$JS.API.CONSUMER.MSG.NEXT." + as + ".wbwatch", pull("wbwatch")},
		{"pull from the scheduler's consumer", "$JS.API.CONSUMER.MSG.NEXT." + as + ".schedwatch", pull("schedwatch")},
		// NATS checks no permission on a stream's sources or republish.
		{"create a stream sourcing the assignments", "$JS.API.STREAM.CREATE.EVIL",
			func(_ *nats.Conn, js jetstream.JetStream) error {
				_, err := js.CreateStream(quick(t), jetstream.StreamConfig{Name: "EVIL", Sources: []*jetstream.StreamSource{{Name: as}}})
				return err
			}},
		{"update the assignments' stream to republish", "$JS.API.STREAM.UPDATE." + as,
			request("$JS.API.STREAM.UPDATE."+as, `{"name":"`+as+`","subjects":["$KV.`+ab+`.>"],"republish":{"src":">","dest":"_INBOX.wa.x.>"}}`)},
		{"purge a job stream", "$JS.API.STREAM.PURGE." + jn.Stream("text", "train"), request("$JS.API.STREAM.PURGE."+jn.Stream("text", "train"), "")},
		{"delete a job message", "$JS.API.STREAM.MSG.DELETE." + jn.Stream("text", "train"),
			request("$JS.API.STREAM.MSG.DELETE."+jn.Stream("text", "train"), `{"seq":1}`)},
		{"write another worker's registration", "$KV." + wk + "." + protocol.WorkerKey("wb"), put(wk, protocol.WorkerKey("wb"))},
		{"write a registration under no worker's key", "$KV." + wk + ".evil", put(wk, "evil")},
		{"write another worker's replica record", "$KV." + rk + ".text.Pipeline.wb.evil", put(rk, protocol.ReplicaKey("text", "Pipeline", "wb", "evil"))},
		{"write a replica record under a key of another shape", "$KV." + rk + ".evil", put(rk, "evil")},
		{"write an assignment", "$KV." + ab + "." + protocol.AssignmentKey("wa"), put(ab, protocol.AssignmentKey("wa"))},
	}
	for _, f := range forgeries {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			nc := e.workerConn(t, "wa")
			js, _ := jetstream.New(nc)
			err := f.try(nc, js)
			if err == nil {
				t.Fatalf("%s as worker wa succeeded, want a permissions violation", f.name)
			}
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") && !errors.Is(err, nats.ErrTimeout) &&
				!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
				t.Errorf("%s as worker wa = %v, want a permissions violation", f.name, err)
			}
			waitLogged(t, e.log, f.subject, "wa")
		})
	}
	t.Run("nothing changed", func(t *testing.T) {
		c := ctx(t)
		if _, err := b.Workers.Get(c, protocol.WorkerKey("wb")); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("wb's registration exists (%v)", err)
		}
		if _, err := b.Replicas.Get(c, protocol.ReplicaKey("text", "Pipeline", "wb", "evil")); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("the forged replica record exists (%v)", err)
		}
		opJS, _ := jetstream.New(e.conn(t, auth.Operator))
		if _, err := opJS.Stream(c, "EVIL"); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("the stream sourcing the assignments exists (%v)", err)
		}
		if st, err := opJS.Stream(c, as); err != nil || st.CachedInfo().Config.RePublish != nil {
			t.Errorf("the assignments' stream republishes (%v)", err)
		}
		if st, err := opJS.Stream(c, jn.Stream("text", "train")); err != nil || st.CachedInfo().State.Msgs != 1 {
			t.Errorf("the job stream lost its queued job (%v)", err)
		}
	})

	// Its own: the worker reads its assignment (get and watch) and writes
	// its registration and replicas' records.
	t.Run("its own", func(t *testing.T) {
		nc := e.connect(t, "wa-own", e.gen.Workers["wa"])
		defer func() {
			if e.log.HasViolation("", "wa-own") {
				t.Error("the server logged a violation by wa's own reads and writes")
			}
		}()
		js, _ := jetstream.New(nc)
		a := kv(t, js, ab)
		if _, err := a.Get(ctx(t), protocol.AssignmentKey("wa")); err != nil {
			t.Errorf("wa's get of its assignment = %v", err)
		}
		w, err := a.Watch(ctx(t), protocol.AssignmentKey("wa"))
		if err != nil {
			t.Fatalf("wa's watch of its assignment = %v", err)
		}
		defer w.Stop() //nolint:errcheck // a test's watch
		select {
		case en := <-w.Updates():
			if en == nil || en.Key() != protocol.AssignmentKey("wa") {
				t.Errorf("wa's watch delivered %v first, want its assignment", en)
			}
		case <-time.After(3 * time.Second):
			t.Error("wa's watch of its assignment delivered nothing")
		}
		// Its kvfollow watch, as the worker follows it: pushed (it may not
		// pull there) and without the stream leader's reads, which its
		// permissions deny (the key is in the request's body).
		own := kvfollow.New(nc, a, kvfollow.Options[json.RawMessage]{Keys: []string{protocol.AssignmentKey("wa")}, Push: true,
			TrustReplica: true, Log: zerolog.Nop()})
		fctx, stopFollow := context.WithCancel(context.Background())
		followed := make(chan error, 1)
		go func() { followed <- own.Run(fctx) }()
		select {
		case <-own.Ready():
			if _, ok := own.Get(protocol.AssignmentKey("wa")); !ok {
				t.Error("wa's kvfollow watch has not its assignment")
			}
		case <-time.After(5 * time.Second):
			t.Error("wa's kvfollow watch of its assignment: not ready after 5 s")
		}
		stopFollow()
		<-followed
		// Job records, every one (a TaskQueue's list and resume_all):
		// the watch of a bucket named per method.
		jw, err := kv(t, js, jn.Records("text", "train")).WatchAll(ctx(t))
		if err != nil {
			t.Fatalf("wa's watch of the job records = %v", err)
		}
		defer jw.Stop() //nolint:errcheck // a test's watch
		select {
		case en := <-jw.Updates():
			if en == nil {
				t.Error("wa's watch of the job records delivered no record")
			}
		case <-time.After(3 * time.Second):
			t.Error("wa's watch of the job records delivered nothing")
		}
		for _, k := range []struct{ bucket, key string }{{wk, protocol.WorkerKey("wa")}, {rk, protocol.ReplicaKey("text", "Pipeline", "wa", "r1")}} {
			if _, err := kv(t, js, k.bucket).Put(ctx(t), k.key, []byte(`{}`)); err != nil {
				t.Errorf("wa's put of %s = %v", k.key, err)
			}
		}
	})
	t.Run("the pool user", func(t *testing.T) {
		js, _ := jetstream.New(e.conn(t, auth.Worker))
		if _, err := kv(t, js, ab).Get(ctx(t), protocol.AssignmentKey("wb")); err != nil {
			t.Errorf("the pool worker's get of wb's assignment = %v", err)
		}
		if _, err := kv(t, js, wk).Put(ctx(t), protocol.WorkerKey("wc"), []byte(`{}`)); err != nil {
			t.Errorf("the pool worker's put of a registration = %v", err)
		}
	})
}

// TestSchedulerHealthChecksReplicas: the scheduler's health checks reach a
// replica's health endpoint and get its answer (without this right it
// replaced every healthy replica after health_check_failure_threshold
// periods under auth); its other endpoints stay refused to it.
func TestSchedulerHealthChecksReplicas(t *testing.T) {
	e := start(t)
	worker := e.conn(t, auth.Worker)
	health := e.names.ReplicaSubject("r1") + "." + protocol.EndpointHealth
	sub, err := worker.Subscribe(health, func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}
	sched := e.conn(t, auth.Scheduler)
	if m, err := sched.Request(health, nil, 2*time.Second); err != nil || string(m.Data) != "ok" {
		t.Fatalf("scheduler health check = %v, %v; want the replica's answer", m, err)
	}
	call := e.names.ReplicaSubject("r1") + "." + protocol.EndpointCall
	_ = sched.Publish(call, []byte("x"))
	_ = sched.Flush()
	waitLogged(t, e.log, call, "scheduler")
}

// TestSchedulerCountsPinnedRuns: under its credentials the scheduler
// reads the workflows' records to count the runs pinned to a version and
// asks a workflow's runners (a worker) to unpin one; it still writes no
// job record itself (TestForgeriesRefused).
func TestSchedulerCountsPinnedRuns(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jn := jobs.Names{Names: e.names}
	// The scheduler creates the workflow's streams (only it may).
	sched := e.conn(t, auth.Scheduler)
	sjs, _ := jetstream.New(sched)
	sq := jobs.NewQueue(sjs, jn, zerolog.Nop())
	if err := sq.Ensure(ctx, "text", "Pipeline", config.AsyncMethod{Name: "flow", Workflow: true}); err != nil {
		t.Fatal(err)
	}
	worker := e.conn(t, auth.Worker)
	wjs, _ := jetstream.New(worker)
	kv, err := wjs.KeyValue(ctx, jn.Records("text", "flow"))
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(jobs.Record{ID: "p1", App: "text", Deployment: "Pipeline", Method: "flow", Workflow: true,
		Status: jobs.Suspended, Version: "v1", PinnedUntil: time.Now().Add(time.Hour)})
	if _, err := kv.Put(ctx, "p1", rec); err != nil {
		t.Fatal(err)
	}
	unpins, err := worker.QueueSubscribeSync(jn.UnpinSubject("text", "flow"), "unpin")
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}

	runs, err := sq.PinnedRuns(ctx, "text", time.Now())
	if err != nil || len(runs) != 1 || runs[0].ID != "p1" || runs[0].Version != "v1" {
		t.Fatalf("PinnedRuns() as the scheduler = %+v, %v; want run p1 pinned to v1", runs, err)
	}
	if err := sq.RequestUnpin("text", runs[0]); err != nil {
		t.Fatal(err)
	}
	if m, err := unpins.NextMsg(5 * time.Second); err != nil || !strings.Contains(string(m.Data), `"p1"`) {
		t.Fatalf("the worker got the unpin request %v, %v; want run p1's", m, err)
	}
}

// Load reports under auth: a worker (its own user, and the pool user)
// publishes both kinds; the routers (the ingress, the router service, a
// worker's embedded router) hear both, the autoscaler and the scheduler's
// dashboard the full ones.
func TestLoadReportsFlow(t *testing.T) {
	e := start(t)
	full, route := e.names.LoadSubject("text", "Pipeline"), e.names.RouteLoadSubject("text", "Pipeline")
	hears := map[string][]string{
		auth.Ingress: {full, route}, auth.Router: {full, route}, auth.Worker: {full, route},
		auth.Autoscaler: {full}, auth.Scheduler: {full},
	}
	for _, pub := range []*nats.Conn{e.workerConn(t, "wa"), e.conn(t, auth.Worker)} {
		for role, subjects := range hears {
			nc := e.conn(t, role)
			for _, subject := range subjects {
				sub, err := nc.SubscribeSync(subject)
				if err != nil {
					t.Fatal(err)
				}
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				if err := pub.Publish(subject, []byte(`{"replica_id":"r"}`)); err != nil {
					t.Fatal(err)
				}
				if _, err := sub.NextMsg(2 * time.Second); err != nil {
					t.Errorf("%s heard no report on %s from %s: %v", role, subject, pub.Opts.Name, err)
				}
				_ = sub.Unsubscribe()
			}
		}
	}
}
