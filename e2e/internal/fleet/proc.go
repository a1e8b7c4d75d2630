package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is one OS process started by a test, its stdout and stderr going
// to Log.
type Proc struct {
	Name string
	// Log is the file holding the process's stdout and stderr.
	Log string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	mu   sync.Mutex
	err  error // guarded by mu; the exit error, valid once done is closed
}

// StartProc starts path with args and exactly env (no inherited
// environment beyond PATH/HOME/TMPDIR, so a stray JETSERVE_* variable of
// the test's own environment cannot change the service). The process is
// SIGKILLed in tb's Cleanup, and its log tail is printed if tb failed.
func StartProc(tb testing.TB, name, path string, args []string, env map[string]string) *Proc {
	tb.Helper()
	dir := tb.TempDir()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		tb.Fatalf("e2e: create log of %s: %v", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Env = baseEnv()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// Its own process group, so a SIGINT to `go test` does not reach it
	// before the cleanup does.
	// Pdeathsig: a test binary killed (its timeout, a SIGKILL) leaves no
	// process behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		tb.Fatalf("e2e: start %s: %v", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.Kill(tb)
		if p.LogContains("WARNING: DATA RACE") {
			tb.Errorf("e2e: %s reported a data race (built with -race):\n%s", name, p.From("WARNING: DATA RACE", 60))
		}
		if tb.Failed() {
			tb.Logf("e2e: ---- last lines of %s (%s) ----\n%s", name, logPath, p.Tail(40))
		}
		if dir := os.Getenv(EnvKeepLogs); dir != "" {
			if kept, err := keepLog(dir, tb.Name(), name, p.Pid(), logPath); err != nil {
				tb.Logf("e2e: keep the log of %s: %v", name, err)
			} else {
				tb.Logf("e2e: log of %s kept at %s", name, kept)
			}
		}
	})
	return p
}

// EnvKeepLogs names the environment variable that, set to a directory,
// keeps every process's log there after its test (the test's temporary
// directories are removed): DIR/<test>/<process>-<pid>.log.
const EnvKeepLogs = "E2E_KEEP_LOGS"

// keepLog copies the log at from to dir/<test>/<name>-<pid>.log.
func keepLog(dir, test, name string, pid int, from string) (string, error) {
	b, err := os.ReadFile(from)
	if err != nil {
		return "", err
	}
	sub := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(test))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return "", err
	}
	to := filepath.Join(sub, fmt.Sprintf("%s-%d.log", name, pid))
	return to, os.WriteFile(to, b, 0o644)
}

func baseEnv() []string {
	env := []string{"NO_COLOR=1"} // plain console logs (zerolog honours it)
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GORACE"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitErr returns how the process ended (nil: exit status 0); call it once
// Exited.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill(tb testing.TB) {
	tb.Helper()
	if p.Exited() {
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		tb.Errorf("e2e: kill -9 %s: %v", p.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		tb.Errorf("e2e: %s (pid %d) still running 10s after SIGKILL", p.Name, p.Pid())
	}
}

// Signal sends sig to the process (not waiting for anything).
func (p *Proc) Signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		tb.Fatalf("e2e: signal %v to %s: %v", sig, p.Name, err)
	}
}

// Term sends SIGTERM and waits up to timeout for a clean exit; it returns
// the exit error (nil for status 0). A process still running after timeout
// is killed and the test fails.
func (p *Proc) Term(tb testing.TB, timeout time.Duration) error {
	tb.Helper()
	if !p.Exited() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			tb.Fatalf("e2e: SIGTERM %s: %v", p.Name, err)
		}
	}
	select {
	case <-p.done:
		return p.ExitErr()
	case <-time.After(timeout):
		tb.Errorf("e2e: %s did not exit within %v of SIGTERM; killing it", p.Name, timeout)
		p.Kill(tb)
		return fmt.Errorf("%s: no exit within %v of SIGTERM", p.Name, timeout)
	}
}

// Tail returns the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// From returns up to n lines of the log starting at the first line that
// contains marker ("" if none does).
func (p *Proc) From(marker string, n int) string {
	b, _ := os.ReadFile(p.Log)
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		return ""
	}
	lines := bytes.SplitN(b[i:], []byte("\n"), n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// LogContains reports whether the process's log contains s.
func (p *Proc) LogContains(s string) bool {
	b, _ := os.ReadFile(p.Log)
	return bytes.Contains(b, []byte(s))
}

// LoggedAddr waits up to timeout for a line of the process's log that
// holds msg and an addr field (zerolog's console format: addr=host:port)
// and returns the address: how a test learns the port a process bound
// when it was given port 0.
func (p *Proc) LoggedAddr(tb testing.TB, msg string, timeout time.Duration) string {
	tb.Helper()
	var addr string
	Eventually(tb, timeout, fmt.Sprintf("%s to log %q with its address", p.Name, msg), func() error {
		b, err := os.ReadFile(p.Log)
		if err != nil {
			return err
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if !strings.Contains(line, msg) {
				continue
			}
			if m := addrField.FindStringSubmatch(line); m != nil {
				addr = m[1]
				return nil
			}
		}
		if p.Exited() {
			tb.Fatalf("e2e: %s exited before it logged %q: %v\n%s", p.Name, msg, p.ExitErr(), p.Tail(30))
		}
		return errors.New("not logged yet")
	})
	return addr
}

// FreeAddrs returns n distinct "127.0.0.1:<port>" addresses free a moment
// ago: all n are held open together, then closed, so none repeats (a
// cluster's ports are all chosen before its first node starts).
func FreeAddrs(tb testing.TB, n int) []string {
	tb.Helper()
	addrs := make([]string, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("e2e: find a free port: %v", err)
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

var addrField = regexp.MustCompile(`(?:^|\s)addr=(\S+)`)

// Port returns the port of a host:port address.
func Port(tb testing.TB, addr string) int {
	tb.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		tb.Fatalf("e2e: port of %s: %v", addr, err)
	}
	return n
}

// RunCmd runs a short-lived command (the CLI) to completion with a timeout
// and returns its stdout, stderr and error.
func RunCmd(tb testing.TB, timeout time.Duration, path string, args ...string) (stdout, stderr string, err error) {
	tb.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = baseEnv()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		return "", "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		err = fmt.Errorf("%s %s: no exit within %v", filepath.Base(path), strings.Join(args, " "), timeout)
	}
	return o.String(), e.String(), err
}
