package diag

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
)

// HandlerJournal is the Journal deployment's handler name.
const HandlerJournal = "diag.Journal"

// MethodRun is Journal's async method.
const MethodRun = "run"

// Journal is a deployment whose async method "run" waits ?ms=N (default
// 0) and returns {id, attempt, replica}. When its user_config names a
// journal file ({"journal": "/path"}), every attempt appends a line when it
// starts and one when it returns:
//
//	start <job id> <attempt> <replica id> <unix nanoseconds>
//	done <job id> <attempt> <replica id> <unix nanoseconds>
//
// so that a test can see, apart from jetserve's own records, every time a
// job ran (the chaos suite counts jobs run after they were recorded).
// Every replica on one machine may append to the same file: each line is
// one write to a file opened with O_APPEND.
type Journal struct {
	replica string
	mu      sync.Mutex // serialises appends of this replica
	path    string     // "" = no journal
}

// JournalConfig is Journal's user_config.
type JournalConfig struct {
	Journal string `json:"journal"`
}

func registerJournal(reg *serve.Registry) error {
	return reg.Register(HandlerJournal, func(_ context.Context, init serve.Init) (serve.Handler, error) {
		var c JournalConfig
		if len(init.UserConfig) > 0 {
			if err := json.Unmarshal(init.UserConfig, &c); err != nil {
				return nil, fmt.Errorf("diag.Journal user_config: %w", err)
			}
		}
		return &Journal{replica: init.ReplicaID, path: c.Journal}, nil
	}, serve.WithAsync(config.AsyncMethod{Name: MethodRun}))
}

// ServeRequest answers every sync request with the replica id.
func (j *Journal) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return serve.JSON(map[string]string{"replica": j.replica})
}

// RunJob waits ms milliseconds and returns the job's id and attempt.
func (j *Journal) RunJob(ctx serve.JobContext, job *serve.Job) (any, error) {
	var ms int
	if raw, ok := job.Args["ms"]; ok {
		// A query argument arrives as a JSON string, a body field as a number.
		var s string
		if json.Unmarshal(raw, &s) == nil {
			raw = json.RawMessage(s)
		}
		n, err := strconv.Atoi(string(raw))
		if err != nil || n < 0 {
			return nil, serve.Errorf(http.StatusBadRequest, "ms: want a whole number of milliseconds >= 0, got %s", raw)
		}
		ms = n
	}
	if err := j.append("start", job); err != nil {
		return nil, err
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := j.append("done", job); err != nil {
		return nil, err
	}
	return map[string]any{"id": job.ID, "attempt": job.Attempt, "replica": j.replica}, nil
}

func (j *Journal) append(event string, job *serve.Job) error {
	if j.path == "" {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	_, err = fmt.Fprintf(f, "%s %s %d %s %d\n", event, job.ID, job.Attempt, j.replica, time.Now().UnixNano())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to journal: %w", err)
	}
	return nil
}
