package process

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/logtest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	goleak.VerifyTestMain(m)
}

// logBuf collects log lines (JSON) safely across goroutines.
type logBuf struct{ logtest.Buffer }

// events returns the decoded log events.
func (l *logBuf) events(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.Bytes()))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("log line %q: %v", sc.Bytes(), err)
		}
		out = append(out, ev)
	}
	return out
}

// find returns the first event whose message contains msg and whose
// fields include want.
func (l *logBuf) find(t testing.TB, msg string, want map[string]any) map[string]any {
	t.Helper()
	for _, ev := range l.events(t) {
		m, _ := ev["message"].(string)
		if !strings.Contains(m, msg) {
			continue
		}
		ok := true
		for k, v := range want {
			if fmt.Sprint(ev[k]) != fmt.Sprint(v) {
				ok = false
			}
		}
		if ok {
			return ev
		}
	}
	return nil
}

// opts returns Options running this test binary in mode.
func opts(t testing.TB, mode string, log *logBuf) Options {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		Command:        []string{self},
		BaseEnv:        []string{childEnv + "=" + mode, "GORACE=atexit_sleep_ms=0"}, // no 1 s pause at exit under -race
		HealthPath:     "/healthz",
		StartupTimeout: 30 * time.Second,
		StopTimeout:    10 * time.Second,
		MaxConns:       4,
		ReplicaID:      "app-dep-1",
		Log:            zerolog.New(log).With().Str("replica_id", "app-dep-1").Logger(),
	}
}

// start starts a child and closes it at the end of the test.
func start(t testing.TB, o Options) *Child {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { closeChild(t, c) })
	return c
}

func closeChild(t testing.TB, c *Child) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// gone reports whether pid no longer runs (absent, or a zombie nobody
// reaped: in a container PID 1 may not reap orphans).
func gone(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// "pid (comm) S ..." — the state follows the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) && s[i+2] == 'Z' {
		return nil
	}
	return fmt.Errorf("pid %d still runs: %s", pid, strings.TrimSpace(s))
}

func call(t testing.TB, c *Child, method, target string, body string, h http.Header) *serve.Response {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.ServeRequest(ctx, &serve.Request{Method: method, Path: u.Path, Query: u.Query(), Header: h,
		Body: []byte(body), RequestID: "req-1"})
	if err != nil {
		t.Fatalf("ServeRequest %s %s: %v", method, target, err)
	}
	return resp
}

func TestProxyPassesMethodPathQueryHeadersBodyAndStatus(t *testing.T) {
	var log logBuf
	c := start(t, opts(t, modeServe, &log))
	resp := call(t, c, http.MethodPut, "/echo?status=201&b=2&a=1", "hello child",
		http.Header{"X-Custom": {"v1", "v2"}, "Connection": {"close"}, "Content-Type": {"text/plain"}})
	if resp.Status != http.StatusCreated {
		t.Fatalf("status = %d, want 201 (%s)", resp.Status, resp.Body)
	}
	if got := resp.Header.Get("X-Child"); got != "yes" {
		t.Errorf("response header X-Child = %q, want yes", got)
	}
	if got := resp.Header.Get("Connection"); got != "" {
		t.Errorf("hop-by-hop response header Connection = %q, want it dropped", got)
	}
	var echo struct {
		Method, Path, Query, Body string
		Header                    http.Header
	}
	if err := json.Unmarshal(resp.Body, &echo); err != nil {
		t.Fatalf("decode %s: %v", resp.Body, err)
	}
	if echo.Method != "PUT" || echo.Path != "/echo" || echo.Body != "hello child" {
		t.Errorf("child saw %s %s body %q, want PUT /echo body %q", echo.Method, echo.Path, echo.Body, "hello child")
	}
	if q, _ := url.ParseQuery(echo.Query); q.Get("a") != "1" || q.Get("b") != "2" || q.Get("status") != "201" {
		t.Errorf("child saw query %q, want a=1 b=2 status=201", echo.Query)
	}
	if got := echo.Header["X-Custom"]; len(got) != 2 || got[0] != "v1" || got[1] != "v2" {
		t.Errorf("child saw X-Custom %q, want [v1 v2]", got)
	}
	if got := echo.Header.Get("X-Request-Id"); got != "req-1" {
		t.Errorf("child saw X-Request-Id %q, want req-1", got)
	}
	if got := echo.Header.Get("Accept-Encoding"); got != "" {
		t.Errorf("proxy added Accept-Encoding %q; bodies must pass untouched", got)
	}
	// A redirect is the child's answer, not followed.
	if r := call(t, c, http.MethodGet, "/redirect", "", nil); r.Status != http.StatusFound || r.Header.Get("Location") != "/elsewhere" {
		t.Errorf("GET /redirect = %d Location %q, want 302 /elsewhere", r.Status, r.Header.Get("Location"))
	}
	// A handle call's method is the first path segment.
	resp, err := c.ServeRequest(context.Background(), &serve.Request{Call: "echo", Path: "/"})
	if err != nil || resp.Status != http.StatusOK || !bytes.Contains(resp.Body, []byte(`"path":"/echo"`)) {
		t.Errorf("handle call echo = %v %v, want 200 from /echo", resp, err)
	}
}

func TestChildEnvironment(t *testing.T) {
	var log logBuf
	o := opts(t, modeServe, &log)
	o.BaseEnv = append(o.BaseEnv, "FROM_WORKER=w", "JETSERVE_NATS_URL=nats://secret:4222", "PORT=1")
	o.Env = map[string]string{"FROM_DEPLOYMENT": "d", "CUDA_VISIBLE_DEVICES": "overridden"}
	o.GPUs = []int{0, 2}
	o.UserConfig = json.RawMessage(`{"threshold":0.5}`)
	c := start(t, o)
	var env map[string]string
	if err := json.Unmarshal(call(t, c, http.MethodGet, "/env", "", nil).Body, &env); err != nil {
		t.Fatal(err)
	}
	_, _, ps := c.State()
	want := map[string]string{
		"PORT": strconv.Itoa(ps.Port), "CUDA_VISIBLE_DEVICES": "0,2", "JETSERVE_USER_CONFIG": `{"threshold":0.5}`,
		"JETSERVE_REPLICA_ID": "app-dep-1", "FROM_DEPLOYMENT": "d", "FROM_WORKER": "w",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("child's %s = %q, want %q", k, env[k], v)
		}
	}
	if v, ok := env["JETSERVE_NATS_URL"]; ok {
		t.Errorf("child inherited the worker's JETSERVE_NATS_URL=%q; JETSERVE_* must not leak", v)
	}
}

// streamRecorder is a serve.StreamWriter that releases the child's second
// chunk once the first arrived: if the proxy buffered the answer, the
// child would time out and send "late" instead.
type streamRecorder struct {
	release func()
	status  int
	header  http.Header
	chunks  []string
}

func (s *streamRecorder) WriteHead(status int, h http.Header) error {
	s.status, s.header = status, h
	return nil
}

func (s *streamRecorder) Write(b []byte) error {
	s.chunks = append(s.chunks, string(b))
	if len(s.chunks) == 1 {
		s.release()
	}
	return nil
}

func TestStreamSendsChunksAsTheyCome(t *testing.T) {
	var log logBuf
	c := start(t, opts(t, modeServe, &log))
	rec := &streamRecorder{release: func() {
		if r := call(t, c, http.MethodGet, "/release", "", nil); r.Status != http.StatusOK {
			t.Errorf("GET /release = %d", r.Status)
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.ServeStream(ctx, &serve.Request{Method: "GET", Path: "/stream"}, rec); err != nil {
		t.Fatalf("ServeStream: %v", err)
	}
	if rec.status != http.StatusOK || rec.header.Get("Content-Type") != "text/plain" {
		t.Errorf("head = %d %v, want 200 text/plain", rec.status, rec.header)
	}
	if got := strings.Join(rec.chunks, "|"); got != "a|b" {
		t.Errorf("chunks = %q, want a|b (the first before the child sent the second)", got)
	}
}

func TestCheckHealth(t *testing.T) {
	var log logBuf
	c := start(t, opts(t, modeServe, &log))
	if err := c.CheckHealth(context.Background()); err != nil {
		t.Errorf("CheckHealth = %v, want nil", err)
	}
	st, msg, ps := c.State()
	if st != protocol.ReplicaRunning || msg != "" || ps.PID == 0 || ps.Port == 0 || ps.Restarts != 0 {
		t.Errorf("State = %s %q %+v, want RUNNING with a pid and port, no restarts", st, msg, ps)
	}
}

func TestStartFailures(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "model.py")
	if err := os.WriteFile(notExec, []byte("print('hi')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	cases := []struct {
		name   string
		mutate func(*Options)
		want   []string
	}{
		{"command not found", func(o *Options) { o.Command = []string{"no-such-model-server-e2e", "--port", "1"} },
			[]string{`start ["no-such-model-server-e2e" "--port" "1"]`, "executable file not found"}},
		{"not executable", func(o *Options) { o.Command = []string{notExec} }, []string{"permission denied"}},
		{"exits before healthy", func(o *Options) { o.BaseEnv = []string{childEnv + "=" + modeCrash} },
			[]string{"exited before it became healthy (exit status 3)", "last stderr lines:\nloading model from /models/digits.bin\nboom: bad model file"}},
		{"never healthy", func(o *Options) {
			o.BaseEnv = []string{childEnv + "=" + modeLoading}
			o.StartupTimeout = time.Second
		}, []string{"not healthy within startup_timeout 1s", "answered 503: loading", "still loading weights"}},
		{"port in use", func(o *Options) { o.Port = busyPort }, []string{fmt.Sprintf("port %d is in use", busyPort)}},
		{"no command", func(o *Options) { o.Command = nil }, []string{"command: is required"}},
		{"bad health path", func(o *Options) { o.HealthPath = "healthz" }, []string{`health_path: must start with '/', got "healthz"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var log logBuf
			o := opts(t, modeServe, &log)
			tc.mutate(&o)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := Start(ctx, o)
			if err == nil {
				closeChild(t, c)
				t.Fatalf("Start succeeded, want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestStartAbortedByContext(t *testing.T) {
	var log logBuf
	o := opts(t, modeLoading, &log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		c, err := Start(ctx, o)
		if c != nil {
			closeChild(t, c)
		}
		done <- err
	}()
	var pid int
	waitfor.NoError(t, 30*time.Second, "child started", func() error {
		ev := log.find(t, "child process started", nil)
		if ev == nil {
			return errors.New("no start event yet")
		}
		pid = int(ev["pid"].(float64))
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Errorf("Start = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start did not return after its context ended")
	}
	if err := gone(pid); err != nil {
		t.Error(err)
	}
}

func TestLogsEveryLineTagged(t *testing.T) {
	var log logBuf
	c := start(t, opts(t, modeServe, &log))
	_, _, ps := c.State()
	waitfor.NoError(t, 10*time.Second, "child output logged", func() error {
		for _, w := range []struct{ msg, stream string }{
			{"child: listening on 127.0.0.1:" + strconv.Itoa(ps.Port), "stdout"},
			{"child: hello on stderr", "stderr"},
		} {
			if log.find(t, w.msg, map[string]any{"stream": w.stream, "replica_id": "app-dep-1", "pid": ps.PID}) == nil {
				return fmt.Errorf("no %s event %q with replica_id and pid", w.stream, w.msg)
			}
		}
		return nil
	})
}

// waitState waits until c's state is want.
func waitState(t testing.TB, c *Child, want protocol.ReplicaState) (string, *protocol.ProcessStatus) {
	t.Helper()
	var msg string
	var ps *protocol.ProcessStatus
	waitfor.NoError(t, 60*time.Second, "state "+string(want), func() error {
		var st protocol.ReplicaState
		st, msg, ps = c.State()
		if st != want {
			return fmt.Errorf("state %s (%s)", st, msg)
		}
		return nil
	})
	return msg, ps
}

func TestRestartAfterKill(t *testing.T) {
	var log logBuf
	o := opts(t, modeServe, &log)
	o.FirstBackoff = 2 * time.Second // long enough to look at the replica while it is down
	c := start(t, o)
	_, _, before := c.State()
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Changed():
	case <-time.After(30 * time.Second):
		t.Fatal("no state change after kill -9 of the child")
	}
	msg, ps := waitState(t, c, protocol.ReplicaStarting)
	if !strings.Contains(msg, "process exited (signal: killed); restart 1") {
		t.Errorf("message while restarting = %q, want the exit and the restart number", msg)
	}
	if ps.Restarts != 1 || ps.LastExit != "signal: killed" || ps.LastExitAt.IsZero() {
		t.Errorf("process status while restarting = %+v, want 1 restart, last exit signal: killed", ps)
	}
	// Down: a request is refused as never delivered (the router retries it elsewhere).
	_, err := c.ServeRequest(context.Background(), &serve.Request{Method: "GET", Path: "/echo"})
	if e := serve.AsError(err); e == nil || e.Code != protocol.ErrDraining || e.Status != http.StatusServiceUnavailable {
		t.Errorf("request while restarting = %v, want 503 %s", err, protocol.ErrDraining)
	}
	if err := c.CheckHealth(context.Background()); err == nil {
		t.Error("CheckHealth while restarting = nil, want an error")
	}
	_, ps = waitState(t, c, protocol.ReplicaRunning)
	if ps.PID == 0 || ps.PID == before.PID || ps.Restarts != 1 || ps.LastExit != "signal: killed" {
		t.Errorf("after restart: %+v, want a new pid, 1 restart, last exit signal: killed (old pid %d)", ps, before.PID)
	}
	if r := call(t, c, http.MethodGet, "/echo", "", nil); r.Status != http.StatusOK {
		t.Errorf("GET /echo after restart = %d", r.Status)
	}
	if err := gone(before.PID); err != nil {
		t.Error(err)
	}
}

func TestRequestInFlightWhenChildDies(t *testing.T) {
	var log logBuf
	c := start(t, opts(t, modeServe, &log))
	_, err := c.ServeRequest(context.Background(), &serve.Request{Method: "POST", Path: "/exit"})
	e := serve.AsError(err)
	if e == nil || e.Status != http.StatusServiceUnavailable || e.Code != protocol.ErrUnavailable {
		t.Fatalf("request whose child died = %v, want 503 %s", err, protocol.ErrUnavailable)
	}
	_, ps := waitState(t, c, protocol.ReplicaRunning)
	waitfor.NoError(t, 30*time.Second, "restart recorded", func() error {
		_, _, ps = c.State()
		if ps.Restarts != 1 || ps.LastExit != "exit status 7" {
			return fmt.Errorf("%+v", ps)
		}
		return nil
	})
}

func TestFailedRestartIsFailed(t *testing.T) {
	var log logBuf
	o := opts(t, modeServe, &log)
	o.BaseEnv = append(o.BaseEnv, "CRASH_IF_EXISTS="+filepath.Join(t.TempDir(), "started"))
	c := start(t, o)
	_, _, ps := c.State()
	if err := syscall.Kill(ps.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	msg, ps := waitState(t, c, protocol.ReplicaFailed)
	for _, w := range []string{"restart 1 failed", "exited before it became healthy (exit status 4)", "restart refused: state file"} {
		if !strings.Contains(msg, w) {
			t.Errorf("FAILED message = %q, want it to contain %q", msg, w)
		}
	}
	if ps.Restarts != 1 || ps.PID != 0 {
		t.Errorf("process status = %+v, want 1 restart and no pid", ps)
	}
	if _, err := c.ServeRequest(context.Background(), &serve.Request{Path: "/echo"}); serve.AsError(err).Code != protocol.ErrDraining {
		t.Errorf("request to a FAILED child = %v, want %s", err, protocol.ErrDraining)
	}
}

func TestCloseSendsSIGTERM(t *testing.T) {
	var log logBuf
	c := start(t, opts(t, modeServe, &log))
	_, _, ps := c.State()
	closeChild(t, c)
	if err := gone(ps.PID); err != nil {
		t.Error(err)
	}
	if log.find(t, "got SIGTERM", map[string]any{"stream": "stdout"}) == nil {
		t.Error("the child did not log that it got SIGTERM")
	}
	if log.find(t, "ignored SIGTERM", nil) != nil {
		t.Error("SIGKILL was needed for a child that exits on SIGTERM")
	}
}

func TestCloseKillsAfterStopTimeout(t *testing.T) {
	var log logBuf
	o := opts(t, modeServe, &log)
	o.BaseEnv = append(o.BaseEnv, "IGNORE_TERM=1")
	o.StopTimeout = 300 * time.Millisecond
	c := start(t, o)
	_, _, ps := c.State()
	closeChild(t, c)
	if err := gone(ps.PID); err != nil {
		t.Error(err)
	}
	if log.find(t, "got SIGTERM", nil) == nil {
		t.Error("the child never got SIGTERM")
	}
	if log.find(t, "ignored SIGTERM: SIGKILL", map[string]any{"pid": ps.PID}) == nil {
		t.Error("no SIGKILL after the stop timeout")
	}
}

func TestCloseWithExpiredContextKillsAtOnce(t *testing.T) {
	var log logBuf
	o := opts(t, modeServe, &log)
	o.BaseEnv = append(o.BaseEnv, "IGNORE_TERM=1")
	o.StopTimeout = time.Hour
	c := start(t, o)
	_, _, ps := c.State()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { _ = c.Close(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return once its context ended")
	}
	if err := gone(ps.PID); err != nil {
		t.Error(err)
	}
}

func TestCloseKillsTheWholeGroup(t *testing.T) {
	var log logBuf
	c := start(t, opts(t, modeServe, &log))
	r := call(t, c, http.MethodGet, "/grandchild", "", nil)
	grandchild, err := strconv.Atoi(string(r.Body))
	if err != nil {
		t.Fatalf("grandchild pid %q: %v", r.Body, err)
	}
	if err := gone(grandchild); err == nil {
		t.Fatal("grandchild not running")
	}
	closeChild(t, c)
	waitfor.NoError(t, 10*time.Second, "grandchild gone", func() error { return gone(grandchild) })
}

// TestChildDiesWithItsWorker kill -9s a process that started a child
// through Start: the parent-death signal must take the child down too.
func TestChildDiesWithItsWorker(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	worker := exec.Command(self)
	worker.Env = []string{childEnv + "=" + modeWorker}
	out, err := worker.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	worker.Stderr = &stderr
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = worker.Process.Kill(); _ = worker.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read the child's pid from the worker: %v (stderr: %s)", err, stderr.String())
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || child <= 0 {
		t.Fatalf("child pid %q: %v", line, err)
	}
	if err := gone(child); err == nil {
		t.Fatal("child not running before the worker dies")
	}
	if err := worker.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = worker.Wait()
	waitfor.NoError(t, 10*time.Second, "child of a kill -9'd worker gone", func() error { return gone(child) })
}
