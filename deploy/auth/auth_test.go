package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// serverLog records what the server logs.
type serverLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *serverLog) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}
func (l *serverLog) Noticef(f string, v ...any) { l.add(f, v...) }
func (l *serverLog) Warnf(f string, v ...any)   { l.add(f, v...) }
func (l *serverLog) Fatalf(f string, v ...any)  { l.add(f, v...) }
func (l *serverLog) Errorf(f string, v ...any)  { l.add(f, v...) }
func (l *serverLog) Debugf(f string, v ...any)  {}
func (l *serverLog) Tracef(f string, v ...any)  {}

// has reports whether the server logged a permissions violation naming
// subject by the connection named client (the service's role).
func (l *serverLog) has(subject, client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, "Violation") && strings.Contains(s, subject) && strings.Contains(s, ":go:"+client+`"`) {
			return true
		}
	}
	return false
}

type env struct {
	dir   string
	gen   *auth.Generated
	ns    *server.Server
	log   *serverLog
	names protocol.Names
}

// start generates the accounts and runs a JetStream server configured by
// the generated auth.conf, included from a config file as in production.
func start(t *testing.T) *env {
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
		t.Fatalf("the generated config does not load: %v", err)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	l := &serverLog{}
	ns.SetLoggerV2(l, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	names, _ := protocol.NewNames("jetserve")
	return &env{dir: dir, gen: g, ns: ns, log: l, names: names}
}

func (e *env) conn(t *testing.T, role string) *nats.Conn {
	t.Helper()
	nc, err := service.Connect(context.Background(), service.NATSConfig{URL: e.ns.ClientURL(), Creds: e.gen.Creds[role]}, role, zerolog.Nop())
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
			put(e.names.BucketReplicas(), protocol.ReplicaKey("text", "Pipeline", "evil"), replica)},
		{"forge a worker", "$KV." + e.names.BucketWorkers(), []string{auth.Worker}, put(e.names.BucketWorkers(), "evil", worker)},
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
		// Workers purge object stores' chunks (a finished job's
		// checkpoint), which NATS cannot tell from a job stream by name.
		{"purge a job stream", "$JS.API.STREAM.PURGE." + jn.Stream("text", "train"), []string{auth.Worker},
			func(nc *nats.Conn, _ jetstream.JetStream) error {
				_, err := nc.Request("$JS.API.STREAM.PURGE."+jn.Stream("text", "train"), nil, time.Second)
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
	if _, err := b.Replicas.Get(c, protocol.ReplicaKey("text", "Pipeline", "evil")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the forged replica record exists (%v)", err)
	}
	if _, err := b.Workers.Get(c, "evil"); !errors.Is(err, jetstream.ErrKeyNotFound) {
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

func waitLogged(t *testing.T, l *serverLog, subject, client string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !l.has(subject, client) {
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
	if _, err := auth.Generate(auth.Options{Dir: e.dir, Prefix: "jetserve", Revoke: []string{uc.Subject}}); err != nil {
		t.Fatal(err)
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
