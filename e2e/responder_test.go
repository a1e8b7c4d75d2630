package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/nats-io/nats.go"
)

// responderEnv, set to a NATS URL, makes the e2e test binary a NATS echo
// responder on responderSubject in a process of its own (TestMain), until
// its standard input closes: the raw baseline whose responder, like the
// fleet's replica, is not in the HTTP gateway's process.
const (
	responderEnv     = "JETSERVE_E2E_RESPONDER"
	responderSubject = "bench.echo2p"
)

func runResponder(url string) int {
	nc, err := nats.Connect(url, nats.Name("bench-responder-process"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "responder:", err)
		return 1
	}
	defer nc.Close()
	if _, err := nc.QueueSubscribe(responderSubject, "bench", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		fmt.Fprintln(os.Stderr, "responder:", err)
		return 1
	}
	if err := nc.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "responder:", err)
		return 1
	}
	fmt.Println("responding") // the parent waits for this line
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// startResponderProcess runs the responder process for b and returns its
// pid when it is subscribed; it ends when b's cleanup closes its standard
// input.
func startResponderProcess(b *testing.B, natsURL string) int {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), responderEnv+"="+natsURL)
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
