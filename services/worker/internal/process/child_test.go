package process

// The child programs of the tests: the test binary re-executed with
// PROCESS_TEST_CHILD set to a mode (see TestMain), so every test runs a
// real process without depending on anything installed.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

const childEnv = "PROCESS_TEST_CHILD"

// Child modes.
const (
	modeServe   = "serve"   // an HTTP server on $PORT (see serveChild)
	modeCrash   = "crash"   // writes to stderr and exits 3 at once
	modeLoading = "loading" // serves, but /healthz answers 503 for ever
	modeSleep   = "sleep"   // sleeps (a grandchild)
	modeWorker  = "worker"  // a mini worker: Start a serve child, print its pid, block
)

// runChild runs the child program of mode and returns its exit code.
func runChild(mode string) int {
	switch mode {
	case modeCrash:
		fmt.Fprintln(os.Stderr, "loading model from /models/digits.bin")
		fmt.Fprintln(os.Stderr, "boom: bad model file")
		return 3
	case modeSleep:
		time.Sleep(time.Hour)
		return 0
	case modeWorker:
		return workerChild()
	case modeServe, modeLoading:
		return serveChild(mode == modeLoading)
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return 2
}

// serveChild serves on 127.0.0.1:$PORT:
//
//	/healthz          200 (503 "loading" in loading mode)
//	/echo             200 (or ?status=N) with a JSON echo of the request
//	/env              the variables the test checks, as JSON
//	/stream           chunk "a", then waits for GET /release, then chunk "b"
//	/release          lets /stream go on
//	/exit             exits with status 7 without answering
//	/redirect         302 to /elsewhere
//	/grandchild       starts a grandchild in the same group; answers its pid
//
// SIGTERM: prints "got SIGTERM" and exits 0, unless IGNORE_TERM is set.
// With CRASH_IF_EXISTS=<file>: crashes at start if the file exists,
// else creates it (so a restarted child fails).
func serveChild(loading bool) int {
	if f := os.Getenv("CRASH_IF_EXISTS"); f != "" {
		if _, err := os.Stat(f); err == nil {
			fmt.Fprintln(os.Stderr, "restart refused: state file", f, "exists")
			return 4
		}
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	release := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if loading {
			fmt.Fprintln(os.Stderr, "still loading weights")
			http.Error(w, "loading", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		status := http.StatusOK
		if s := r.URL.Query().Get("status"); s != "" {
			status, _ = strconv.Atoi(s)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Child", "yes")
		w.Header().Set("Connection", "keep-alive")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery,
			"header": r.Header, "body": string(body),
		})
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		out := map[string]string{}
		for _, k := range []string{"PORT", "CUDA_VISIBLE_DEVICES", "JETSERVE_USER_CONFIG", "JETSERVE_REPLICA_ID",
			"FROM_DEPLOYMENT", "FROM_WORKER", "JETSERVE_NATS_URL"} {
			if v, ok := os.LookupEnv(k); ok {
				out[k] = v
			}
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "a")
		w.(http.Flusher).Flush()
		select {
		case <-release:
			fmt.Fprint(w, "b")
		case <-time.After(20 * time.Second):
			fmt.Fprint(w, "late") // the first chunk never reached the test
		}
	})
	mux.HandleFunc("/release", func(w http.ResponseWriter, r *http.Request) {
		release <- struct{}{}
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		os.Exit(7)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	mux.HandleFunc("/grandchild", func(w http.ResponseWriter, r *http.Request) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), childEnv+"="+modeSleep)
		if err := cmd.Start(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprint(w, cmd.Process.Pid)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: mux}
	go func() {
		for range sigs {
			fmt.Println("got SIGTERM")
			if os.Getenv("IGNORE_TERM") == "" {
				os.Exit(0)
			}
		}
	}()
	fmt.Println("child: listening on", srv.Addr)
	fmt.Fprintln(os.Stderr, "child: hello on stderr")
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	return 0
}

// workerChild starts a serve child through Start, prints its pid and
// blocks: the orphan test kill -9s it and expects the child to die too.
func workerChild() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := Start(context.Background(), Options{
		Command:        []string{self},
		BaseEnv:        []string{childEnv + "=" + modeServe},
		HealthPath:     "/healthz",
		StartupTimeout: 30 * time.Second,
		Log:            zerolog.Nop(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, _, ps := c.State()
	fmt.Println(ps.PID)
	select {}
}
