// Package authtest runs NATS servers configured by the files auth.Generate
// writes, included from a config file as in production, so that tests can
// exercise the fleet under least privilege and read what the server
// refused from its log.
//
// A server started here is shut down when the test ends; Log is safe for
// the server's goroutines and the test's together.
package authtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/nats-io/nats-server/v2/server"
)

// Server is a JetStream server under the generated accounts.
type Server struct {
	NS *server.Server
	// Gen is what auth.Generate wrote into Dir.
	Gen *auth.Generated
	Dir string
	Log *Log
}

// Start generates the accounts (prefix "jetserve"), with a NATS user of
// its own for each of workers, into a temp dir and runs a JetStream server
// configured by the generated auth.conf.
func Start(tb testing.TB, workers ...string) *Server {
	tb.Helper()
	dir := tb.TempDir()
	g, err := auth.Generate(auth.Options{Dir: dir, Prefix: "jetserve", Workers: workers})
	if err != nil {
		tb.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("listen: 127.0.0.1:-1\nmax_payload: 8MB\njetstream { store_dir: %q }\ninclude ./%s\n", filepath.Join(dir, "js"), auth.AuthConf)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	l := &Log{}
	return &Server{NS: StartConf(tb, conf, l), Gen: g, Dir: dir, Log: l}
}

// StartConf runs a server configured by the file conf, logging to l, and
// waits until it takes connections.
func StartConf(tb testing.TB, conf string, l *Log) *server.Server {
	tb.Helper()
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		tb.Fatalf("the generated config %s does not load: %v", filepath.Base(conf), err)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ns.SetLoggerV2(l, false, false, false)
	go ns.Start()
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatalf("nats (%s) not ready", filepath.Base(conf))
	}
	return ns
}

// Log keeps what a server logs above debug level.
type Log struct {
	mu    sync.Mutex
	lines []string // guarded by mu
}

func (l *Log) add(format string, v ...any) {
	s := fmt.Sprintf(format, v...)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
}

// Noticef, Warnf, Fatalf and Errorf keep the line; Debugf and Tracef drop
// it (server.Logger).
func (l *Log) Noticef(f string, v ...any) { l.add(f, v...) }
func (l *Log) Warnf(f string, v ...any)   { l.add(f, v...) }
func (l *Log) Fatalf(f string, v ...any)  { l.add(f, v...) }
func (l *Log) Errorf(f string, v ...any)  { l.add(f, v...) }
func (l *Log) Debugf(string, ...any)      {}
func (l *Log) Tracef(string, ...any)      {}

// Violations returns the lines that report a permissions violation or an
// authorization failure.
func (l *Log) Violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.Contains(s, "Violation") || strings.Contains(s, "Authorization") {
			out = append(out, s)
		}
	}
	return out
}

// HasViolation reports whether the server logged a permissions violation
// naming subject by the connection named client (the service's role).
func (l *Log) HasViolation(subject, client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, "Violation") && strings.Contains(s, subject) && strings.Contains(s, ":go:"+client+`"`) {
			return true
		}
	}
	return false
}
