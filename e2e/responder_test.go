package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// responderEnv, set to a NATS URL, makes the e2e test binary a NATS
// responder in a process of its own (TestMain), until its standard input
// closes: the raw baselines whose responder, like the fleet's replica, is
// not in the HTTP gateway's process. With responderHopsEnv unset it
// echoes on responderSubject; set, it serves the hops of raw NATS chains
// that it names instead (rawHops).
const (
	responderEnv     = "JETSERVE_E2E_RESPONDER"
	responderHopsEnv = "JETSERVE_E2E_RESPONDER_HOPS"
	responderSubject = "bench.echo2p"
)

// responderTraceEnv, set to a file path, makes the responder process
// write an execution trace there between SIGUSR1 and SIGUSR2
// (BenchmarkComposition's JETSERVE_BENCH_TRACES: the raw chain's
// responders traced as the workers are through their ops port).
const responderTraceEnv = "JETSERVE_E2E_RESPONDER_TRACE"

// traceOnSignal starts runtime/trace into path on SIGUSR1 and stops it on
// SIGUSR2; the returned stop ends the watch (and a trace still running).
func traceOnSignal(path string) (stop func()) {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var f *os.File
		end := func() {
			if f != nil {
				trace.Stop()
				_ = f.Close()
				f = nil
			}
		}
		defer end()
		for {
			select {
			case <-done:
				return
			case s := <-sig:
				if s == syscall.SIGUSR2 {
					end()
					continue
				}
				if f != nil {
					continue
				}
				var err error
				if f, err = os.Create(path); err != nil {
					fmt.Fprintln(os.Stderr, "responder: trace:", err)
					continue
				}
				if err := trace.Start(f); err != nil {
					fmt.Fprintln(os.Stderr, "responder: trace:", err)
					_ = f.Close()
					f = nil
				}
			}
		}
	})
	return func() {
		signal.Stop(sig)
		close(done)
		wg.Wait()
	}
}

// rawHopError is the header a raw chain hop answers with, in place of the
// body, when its request to the next hop failed; the gateway answers 502.
const rawHopError = "Bench-Error"

// rawHopTimeout bounds a raw chain hop's request to the next one.
const rawHopTimeout = 30 * time.Second

// rawHop is hop i (1-based) of the raw NATS chain named chain, of n hops.
type rawHop struct {
	chain string
	i, n  int
}

// rawHopSubject is the subject hop i of chain serves.
func rawHopSubject(chain string, i int) string { return fmt.Sprintf("bench.raw.%s.%d", chain, i) }

// String is the hop as responderHopsEnv lists it: "chain:i/n".
func (h rawHop) String() string { return fmt.Sprintf("%s:%d/%d", h.chain, h.i, h.n) }

// rawHops parses responderHopsEnv's value: hops ("chain:i/n") separated
// by commas.
func rawHops(v string) ([]rawHop, error) {
	var hops []rawHop
	for _, s := range strings.Split(v, ",") {
		chain, pos, ok1 := strings.Cut(s, ":")
		is, ns, ok2 := strings.Cut(pos, "/")
		i, err1 := strconv.Atoi(is)
		n, err2 := strconv.Atoi(ns)
		if !ok1 || !ok2 || err1 != nil || err2 != nil || chain == "" || i < 1 || i > n {
			return nil, fmt.Errorf("%s: %q is not chain:i/n", responderHopsEnv, s)
		}
		hops = append(hops, rawHop{chain, i, n})
	}
	return hops, nil
}

// serve subscribes hop h on nc. The last hop answers with the request's
// body from the subscription's callback; any other one passes the body on
// to the next hop with a plain request-reply (nc.Request: the connection's
// shared reply subscription) and answers with the answer, from a
// goroutine per request (a callback blocking on the next hop would hold
// up the subscription's other messages), which inflight counts.
func (h rawHop) serve(nc *nats.Conn, inflight *sync.WaitGroup) (*nats.Subscription, error) {
	if h.i == h.n {
		return nc.Subscribe(rawHopSubject(h.chain, h.i), func(m *nats.Msg) { _ = m.Respond(m.Data) })
	}
	next := rawHopSubject(h.chain, h.i+1)
	return nc.Subscribe(rawHopSubject(h.chain, h.i), func(m *nats.Msg) {
		inflight.Go(func() {
			r, err := nc.Request(next, m.Data, rawHopTimeout)
			if err != nil {
				out := nats.NewMsg(m.Reply)
				out.Header.Set(rawHopError, fmt.Sprintf("hop %s: request %s: %v", h, next, err))
				_ = m.RespondMsg(out)
				return
			}
			_ = m.Respond(r.Data)
		})
	})
}

// runResponder is the responder process (responderEnv): it serves until
// its standard input closes, then stops taking requests and waits for the
// ones in flight.
func runResponder(url, hopsSpec string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "responder:", err)
		return 1
	}
	nc, err := nats.Connect(url, nats.Name("bench-responder-process"))
	if err != nil {
		return fail(err)
	}
	defer nc.Close()
	var subs []*nats.Subscription
	var inflight sync.WaitGroup
	if hopsSpec == "" {
		sub, err := nc.QueueSubscribe(responderSubject, "bench", func(m *nats.Msg) { _ = m.Respond(m.Data) })
		if err != nil {
			return fail(err)
		}
		subs = append(subs, sub)
	} else {
		hops, err := rawHops(hopsSpec)
		if err != nil {
			return fail(err)
		}
		for _, h := range hops {
			sub, err := h.serve(nc, &inflight)
			if err != nil {
				return fail(fmt.Errorf("subscribe hop %s: %w", h, err))
			}
			subs = append(subs, sub)
		}
	}
	if err := nc.Flush(); err != nil {
		return fail(err)
	}
	fmt.Println("responding") // the parent waits for this line
	if path := os.Getenv(responderTraceEnv); path != "" {
		stop := traceOnSignal(path)
		defer stop()
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, sub := range subs {
		_ = sub.Unsubscribe()
	}
	inflight.Wait()
	return 0
}

// startResponderProcess runs the responder process for b — serving the
// hops listed (rawHops), or the echo on responderSubject if none — and
// returns its pid when it is subscribed; it ends when b's cleanup closes
// its standard input.
func startResponderProcess(b testing.TB, natsURL string, env []string, hops ...rawHop) int {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), env...), responderEnv+"="+natsURL)
	if len(hops) > 0 {
		spec := make([]string, len(hops))
		for i, h := range hops {
			spec[i] = h.String()
		}
		cmd.Env = append(cmd.Env, responderHopsEnv+"="+strings.Join(spec, ","))
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line := make([]byte, len("responding\n"))
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "responding\n" {
		b.Fatalf("responder process did not start: %q %v", line, err)
	}
	return cmd.Process.Pid
}

// startRawChains runs the raw NATS chains of BenchmarkComposition: n1,
// one hop, and n5, five hops alternating between two responder processes
// (hops 1, 3 and 5 in the first, 2 and 4 in the second, as x5's
// deployments alternate between two workers; n1's hop in the first). It
// returns the two processes' pids. env (NAME=VALUE) is added to their
// environment, as JETSERVE_COMPOSE_WORKER_ENV is to the workers'. With
// traceDir set, each writes an execution trace between SIGUSR1 and
// SIGUSR2 to traceDir/raw-first.trace and raw-second.trace.
func startRawChains(b testing.TB, natsURL string, env []string, traceDir string) []int {
	b.Helper()
	var first, second []rawHop
	first = append(first, rawHop{"n1", 1, 1})
	for i := 1; i <= 5; i++ {
		if i%2 == 1 {
			first = append(first, rawHop{"n5", i, 5})
		} else {
			second = append(second, rawHop{"n5", i, 5})
		}
	}
	envOf := func(name string) []string {
		if traceDir == "" {
			return env
		}
		return append(slices.Clone(env), responderTraceEnv+"="+filepath.Join(traceDir, "raw-"+name+".trace"))
	}
	return []int{startResponderProcess(b, natsURL, envOf("first"), first...), startResponderProcess(b, natsURL, envOf("second"), second...)}
}

// rawHopFailed reports the error a raw chain's answer m carries, if any.
func rawHopFailed(m *nats.Msg) (string, bool) {
	if m.Header == nil {
		return "", false
	}
	v := m.Header.Get(rawHopError)
	return v, v != ""
}
