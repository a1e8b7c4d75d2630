package diag

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// jobCtx is the smallest serve.JobContext: no checkpoints, no progress.
type jobCtx struct {
	context.Context
	job *serve.Job
}

func (c jobCtx) Job() *serve.Job                       { return c.job }
func (c jobCtx) Logger() zerolog.Logger                { return zerolog.Nop() }
func (c jobCtx) Checkpoint([]byte) error               { return errors.New("no checkpoints here") }
func (c jobCtx) LastCheckpoint() ([]byte, bool, error) { return nil, false, nil }
func (c jobCtx) Progress(float64, string) error        { return nil }

func TestJournalAppendsEveryAttempt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	reg := serve.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	if got := reg.AsyncMethods(HandlerJournal); len(got) != 1 || got[0].Name != MethodRun {
		t.Fatalf("AsyncMethods(%s) = %+v, want one method %q", HandlerJournal, got, MethodRun)
	}
	cfg, _ := json.Marshal(JournalConfig{Journal: path})
	ctor, ok := reg.Lookup(HandlerJournal)
	if !ok {
		t.Fatalf("Lookup(%s): not registered", HandlerJournal)
	}
	h, err := ctor(context.Background(), serve.Init{ReplicaID: "r1", UserConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	jh := h.(serve.JobHandler)
	for attempt, ms := range []string{`"5"`, `0`} {
		job := &serve.Job{ID: "j1", Method: MethodRun, Attempt: attempt + 1, Args: serve.Args{"ms": json.RawMessage(ms)}}
		out, err := jh.RunJob(jobCtx{context.Background(), job}, job)
		if err != nil {
			t.Fatalf("RunJob(ms=%s) = %v", ms, err)
		}
		if m := out.(map[string]any); m["id"] != "j1" || m["attempt"] != attempt+1 {
			t.Errorf("RunJob(ms=%s) = %v, want id j1 attempt %d", ms, m, attempt+1)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 5 || f[1] != "j1" || f[3] != "r1" {
			t.Fatalf("journal line %q: want <event> j1 <attempt> r1 <nanos>", line)
		}
		events = append(events, f[0]+" "+f[2])
	}
	if want := "start 1,done 1,start 2,done 2"; strings.Join(events, ",") != want {
		t.Errorf("journal = %v, want %s", events, want)
	}

	job := &serve.Job{ID: "j2", Method: MethodRun, Attempt: 1, Args: serve.Args{"ms": json.RawMessage(`"soon"`)}}
	_, err = jh.RunJob(jobCtx{context.Background(), job}, job)
	var se *serve.Error
	if !errors.As(err, &se) || se.Status != 400 || !strings.Contains(err.Error(), "ms") {
		t.Errorf("RunJob(ms=soon) = %v, want a 400 naming ms", err)
	}
}
