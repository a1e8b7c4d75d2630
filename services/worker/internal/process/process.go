// Package process runs the child process behind a process-runtime replica:
// any program that speaks HTTP on 127.0.0.1:$PORT (a Python model server,
// a C++ inference engine). Start execs it in its own process group with a
// parent-death signal (SIGKILL), so that it never outlives its worker,
// waits until its health path answers 2xx and returns a Child — the
// replica's handler (serve.Handler, serve.StreamHandler,
// serve.HealthChecker, serve.Closer): it proxies requests to the child
// over keep-alive connections (method, path, query, headers, body, status;
// chunked answers streamed chunk by chunk), pumps the child's stdout and
// stderr into the worker's log line by line, restarts the child with
// backoff when it exits, and stops it on Close: SIGTERM to the group, then
// SIGKILL after the stop timeout.
//
// A child that cannot be executed, that exits before it is healthy, or
// that is not healthy within the startup timeout is a failed start: Start
// returns the reason (with the last lines of the child's stderr), and so
// does State after a restart that failed. The Child then takes no requests
// until it is closed.
//
// Concurrency: a Child owns one supervisor goroutine (from Start to Close)
// and, per child process, a goroutine waiting for its exit and two log
// pumps that end when the child's process group has closed its output
// (or, at the latest, when the Child is closed). Close returns once all of
// them have ended. The methods of Child are safe for concurrent use.
package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jetserve/jetserve/pkg/backoff"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
)

// Defaults and bounds.
const (
	// DefaultStderrLines is how many of the child's last stderr lines a
	// failure message carries.
	DefaultStderrLines = 10
	// DefaultFirstBackoff is the wait before the first restart of a child
	// that exited; it doubles for each further quick exit (a child that
	// ran less than ResetAfter) up to DefaultMaxBackoff.
	DefaultFirstBackoff = 100 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	// ResetAfter: a child that ran this long before it exited is restarted
	// after DefaultFirstBackoff again.
	ResetAfter = 30 * time.Second
	// healthProbeTimeout bounds one start-up probe of the health path.
	healthProbeTimeout = 2 * time.Second
	// firstProbeGap and maxProbeGap bound the wait between start-up probes.
	firstProbeGap = 10 * time.Millisecond
	maxProbeGap   = 250 * time.Millisecond
	// pumpGrace is how long the log pumps may take to read what a dead
	// child's group left in its pipes before they are cut off.
	pumpGrace = 2 * time.Second
)

// Options say which program to run and how.
type Options struct {
	// Command is the argv; Command[0] is looked up on PATH unless it
	// holds a slash.
	Command []string
	// BaseEnv is the environment the child starts from (the worker's,
	// as main received it); its JETSERVE_* variables are left out.
	BaseEnv []string
	// Env is added on top of BaseEnv (the deployment's env).
	Env map[string]string
	// Dir is the child's working directory; "" = the worker's.
	Dir string
	// Port is where the child must listen on 127.0.0.1; 0 = pick a free
	// port. The child gets it as PORT.
	Port int
	// HealthPath is polled until it answers 2xx, and on CheckHealth.
	HealthPath string
	// StartupTimeout bounds the wait for the first 2xx of HealthPath.
	StartupTimeout time.Duration
	// StopTimeout is how long Close waits after SIGTERM before SIGKILL
	// (the deployment's graceful_shutdown_timeout).
	StopTimeout time.Duration
	// MaxConns is how many idle keep-alive connections to the child are
	// kept (the deployment's max_ongoing_requests).
	MaxConns int
	// ReplicaID, GPUs and UserConfig are handed to the child as
	// JETSERVE_REPLICA_ID, CUDA_VISIBLE_DEVICES and JETSERVE_USER_CONFIG.
	ReplicaID  string
	GPUs       []int
	UserConfig json.RawMessage
	// Log receives the child's output, one event per line with "stream"
	// (stdout or stderr) and "pid", and the supervisor's events.
	Log zerolog.Logger
	// StderrLines is how many last stderr lines a failure message
	// carries; 0 = DefaultStderrLines.
	StderrLines int
	// FirstBackoff and MaxBackoff bound the restart backoff; 0 = the
	// defaults.
	FirstBackoff, MaxBackoff time.Duration
}

func (o *Options) validate() error {
	var errs []error
	if len(o.Command) == 0 || o.Command[0] == "" {
		errs = append(errs, errors.New("command: is required"))
	}
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("port: must be 0..65535, got %d", o.Port))
	}
	if !strings.HasPrefix(o.HealthPath, "/") {
		errs = append(errs, fmt.Errorf("health_path: must start with '/', got %q", o.HealthPath))
	}
	if o.StartupTimeout <= 0 {
		errs = append(errs, fmt.Errorf("startup_timeout: must be > 0, got %s", o.StartupTimeout))
	}
	for k := range o.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			errs = append(errs, fmt.Errorf("env: invalid variable name %q", k))
		}
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 20 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1
	}
	if o.StderrLines <= 0 {
		o.StderrLines = DefaultStderrLines
	}
	if o.FirstBackoff <= 0 {
		o.FirstBackoff = DefaultFirstBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	return errors.Join(errs...)
}

// Child is a running child process and the handler that proxies to it.
// Create it with Start; Close stops it.
type Child struct {
	o      Options
	log    zerolog.Logger
	base   string // "http://127.0.0.1:<port>"
	env    []string
	client *http.Client
	tr     *http.Transport
	tail   *tail // the current child's last stderr lines

	ctx       context.Context // ends when Close is called
	cancel    context.CancelFunc
	hurry     chan struct{} // closed when Close's context ended: SIGKILL now
	hurryOnce sync.Once
	done      chan struct{} // closed when the supervisor has returned
	changed   chan struct{} // capacity 1: State changed

	mu     sync.Mutex
	state  protocol.ReplicaState  // guarded by mu: RUNNING, STARTING or FAILED
	msg    string                 // guarded by mu
	status protocol.ProcessStatus // guarded by mu
}

// Start runs the child and waits until its health path answers 2xx. An
// error means the start failed (the child, if it ran, is gone): the
// command cannot be executed, the child exited or was not healthy within
// StartupTimeout — the error says which, with the child's last stderr
// lines — or ctx ended.
func Start(ctx context.Context, o Options) (*Child, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("process runtime: %w", err)
	}
	port, err := reservePort(o.Port)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        o.MaxConns,
		MaxIdleConnsPerHost: o.MaxConns,
		IdleConnTimeout:     90 * time.Second,
		// Bodies pass through untouched: no Accept-Encoding added, no
		// transparent decompression.
		DisableCompression: true,
	}
	c := &Child{
		o:    o,
		log:  o.Log,
		base: "http://127.0.0.1:" + strconv.Itoa(port),
		tr:   tr,
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // the caller sees the child's redirect
		}},
		tail:    newTail(o.StderrLines),
		hurry:   make(chan struct{}),
		done:    make(chan struct{}),
		changed: make(chan struct{}, 1),
		state:   protocol.ReplicaStarting,
		status:  protocol.ProcessStatus{Port: port},
	}
	c.env = environ(o, port)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	stopWith := context.AfterFunc(ctx, c.cancel) // Start's ctx aborts the start
	defer stopWith()

	run, err := c.spawn()
	if err != nil {
		c.cancel()
		return nil, err
	}
	if err := c.waitHealthy(run); err != nil {
		c.stop(run)
		c.cancel()
		tr.CloseIdleConnections()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("start aborted: %w", ctx.Err())
		}
		return nil, err
	}
	if !stopWith() { // ctx ended just as the child became healthy
		c.stop(run)
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("start aborted: %w", ctx.Err())
	}
	c.setState(protocol.ReplicaRunning, "")
	c.log.Info().Int("pid", run.pid).Int("port", port).Dur("took", time.Since(run.started)).Msg("child process healthy")
	go c.supervise(run)
	return c, nil
}

// reservePort returns port when it is free on 127.0.0.1 (a port in use
// would let a stranger answer the health checks), or a free port when
// port is 0. The port is free again when it returns: the child binds it.
func reservePort(port int) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		if port == 0 {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		return 0, fmt.Errorf("port %d is in use on 127.0.0.1: %w", port, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// environ is the child's environment: BaseEnv without JETSERVE_*, then
// Env, then what the platform sets (last wins: exec keeps the last value
// of a duplicated key).
func environ(o Options, port int) []string {
	env := make([]string, 0, len(o.BaseEnv)+len(o.Env)+4)
	for _, kv := range o.BaseEnv {
		if !strings.HasPrefix(kv, "JETSERVE_") {
			env = append(env, kv)
		}
	}
	for k, v := range o.Env {
		env = append(env, k+"="+v)
	}
	gpus := make([]string, len(o.GPUs))
	for i, g := range o.GPUs {
		gpus[i] = strconv.Itoa(g)
	}
	uc := strings.TrimSpace(string(o.UserConfig))
	if uc == "" || uc == "null" {
		uc = "{}"
	}
	return append(env,
		"PORT="+strconv.Itoa(port),
		"CUDA_VISIBLE_DEVICES="+strings.Join(gpus, ","),
		"JETSERVE_USER_CONFIG="+uc,
		"JETSERVE_REPLICA_ID="+o.ReplicaID,
	)
}

// run is one child process.
type run struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	exited  chan struct{} // closed once Wait returned
	err     error         // how it exited; read after exited is closed
	pumps   sync.WaitGroup
	outputs []*os.File // read ends of stdout and stderr
}

// spawn execs the child with its output piped to the log pumps.
func (c *Child) spawn() (*run, error) {
	cmd := exec.Command(c.o.Command[0], c.o.Command[1:]...)
	cmd.Env = c.env
	cmd.Dir = c.o.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // its own group: stop signals reach its children too
		Pdeathsig: syscall.SIGKILL, // dies with the worker, even on kill -9
	}
	// Our own pipes (not exec's copying goroutines): Wait does not wait
	// for output that a grandchild may hold open.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	c.tail.reset()
	r := &run{cmd: cmd, started: time.Now(), exited: make(chan struct{}), outputs: []*os.File{outR, errR}}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", quoteArgv(c.o.Command), err)
	}
	r.pid = cmd.Process.Pid
	c.mu.Lock()
	c.status.PID = r.pid
	c.mu.Unlock()
	log := c.log.With().Int("pid", r.pid).Logger()
	r.pumps.Add(2)
	go func() { defer r.pumps.Done(); pump(outR, log, "stdout", nil) }()
	go func() { defer r.pumps.Done(); pump(errR, log, "stderr", c.tail) }()
	go func() {
		r.err = cmd.Wait()
		close(r.exited)
	}()
	log.Info().Strs("command", c.o.Command).Str("url", c.base).Msg("child process started")
	return r, nil
}

func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = strconv.Quote(a)
	}
	return "[" + strings.Join(q, " ") + "]"
}

// waitHealthy polls the health path until it answers 2xx. It fails when
// the child exits first, when StartupTimeout passes, or when the Child's
// context ends.
func (c *Child) waitHealthy(r *run) error {
	deadline := time.NewTimer(c.o.StartupTimeout)
	defer deadline.Stop()
	gaps := backoff.New(firstProbeGap, maxProbeGap)
	wait := time.NewTimer(0)
	defer wait.Stop()
	var last error
	for {
		select {
		case <-c.ctx.Done():
			return c.ctx.Err()
		case <-r.exited:
			c.settle(r)
			return fmt.Errorf("process %s exited before it became healthy (%s)%s",
				quoteArgv(c.o.Command), exitString(r.err), c.tail.describe())
		case <-deadline.C:
			return fmt.Errorf("process %s not healthy within startup_timeout %s (last GET %s: %v)%s",
				quoteArgv(c.o.Command), c.o.StartupTimeout, c.o.HealthPath, last, c.tail.describe())
		case <-wait.C:
		}
		if last = c.probe(c.ctx, healthProbeTimeout); last == nil {
			return nil
		}
		wait.Reset(gaps.Next())
	}
}

// supervise waits for the child to exit and restarts it with backoff
// until the Child is closed; a restart that fails leaves the Child FAILED.
func (c *Child) supervise(r *run) {
	defer close(c.done)
	defer c.tr.CloseIdleConnections()
	quick := 0 // consecutive exits of children that ran less than ResetAfter
	for {
		select {
		case <-c.ctx.Done():
			c.stop(r)
			return
		case <-r.exited:
		}
		c.settle(r)
		c.tr.CloseIdleConnections() // they lead to the dead child
		exit := exitString(r.err)
		if time.Since(r.started) >= ResetAfter {
			quick = 0
		}
		delay := backoff.Nth(c.o.FirstBackoff, c.o.MaxBackoff, quick)
		quick++
		now := time.Now().UTC()
		c.mu.Lock()
		c.status.Restarts++
		c.status.LastExit, c.status.LastExitAt, c.status.PID = exit, now, 0
		n := c.status.Restarts
		c.mu.Unlock()
		c.log.Warn().Int("pid", r.pid).Str("exit", exit).Int("restart", n).Dur("restart_in", delay).
			Msg("child process exited; restarting")
		c.setState(protocol.ReplicaStarting, fmt.Sprintf("process exited (%s); restart %d in %s", exit, n, delay))

		t := time.NewTimer(delay)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		next, err := c.spawn()
		if err == nil {
			if err = c.waitHealthy(next); err != nil {
				c.stop(next)
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Error().Err(err).Int("restart", n).Msg("child process restart failed")
			c.setState(protocol.ReplicaFailed, fmt.Sprintf("restart %d failed: %v", n, err))
			<-c.ctx.Done()
			return
		}
		c.log.Info().Int("pid", next.pid).Int("restart", n).Dur("took", time.Since(next.started)).Msg("child process healthy again")
		c.setState(protocol.ReplicaRunning, "")
		r = next
	}
}

// stop ends a child: SIGTERM to its group, SIGKILL to the group after
// StopTimeout (at once when Close's context ended), then waits for the
// child and its log pumps.
func (c *Child) stop(r *run) {
	select {
	case <-r.exited:
	default:
		// Idle keep-alive connections could hold up a server that waits
		// for its connections before it exits.
		c.tr.CloseIdleConnections()
		signalGroup(r.pid, syscall.SIGTERM)
		t := time.NewTimer(c.o.StopTimeout)
		select {
		case <-r.exited:
			t.Stop()
		case <-t.C:
			c.log.Warn().Int("pid", r.pid).Dur("timeout", c.o.StopTimeout).Msg("child process ignored SIGTERM: SIGKILL")
		case <-c.hurry:
			t.Stop()
		}
	}
	signalGroup(r.pid, syscall.SIGKILL) // the child, if still there, and whatever it left in its group
	<-r.exited
	c.settle(r)
	c.mu.Lock()
	c.status.PID = 0
	c.mu.Unlock()
}

// settle ends an exited child's group and waits for its log pumps to read
// the rest of its output, cutting them off after pumpGrace (a process that
// left the group may hold the pipes).
func (c *Child) settle(r *run) {
	signalGroup(r.pid, syscall.SIGKILL)
	done := make(chan struct{})
	go func() { r.pumps.Wait(); close(done) }()
	t := time.NewTimer(pumpGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		for _, f := range r.outputs {
			f.Close() // unblocks the pump's Read
		}
		<-done
	}
}

// signalGroup signals the process group whose leader is pid; a group
// that is gone already is no error.
func signalGroup(pid int, sig syscall.Signal) {
	if pid > 0 {
		_ = syscall.Kill(-pid, sig)
	}
}

// exitString says how a child ended: "exit status 1", "signal: killed".
func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func (c *Child) setState(s protocol.ReplicaState, msg string) {
	c.mu.Lock()
	c.state, c.msg = s, msg
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Changed is signalled whenever State may have changed.
func (c *Child) Changed() <-chan struct{} { return c.changed }

// State is RUNNING while the child takes requests, STARTING while it is
// being restarted and FAILED once a restart failed, with a message saying
// why, and the child's process status (restarts, last exit).
func (c *Child) State() (protocol.ReplicaState, string, *protocol.ProcessStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := c.status
	return c.state, c.msg, &ps
}

func (c *Child) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == protocol.ReplicaRunning
}

// Close stops the child (SIGTERM to its group, SIGKILL after StopTimeout)
// and the supervisor. When ctx ends first, the group is SIGKILLed at once;
// Close returns only when everything the Child started has ended.
func (c *Child) Close(ctx context.Context) error {
	c.cancel()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
	}
	c.hurryOnce.Do(func() { close(c.hurry) })
	<-c.done
	return nil
}
