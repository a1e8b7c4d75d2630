package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
)

// The diag.Journal deployment (examples/diag): an async method that
// appends every attempt to a journal file (start/done lines).
const (
	handlerJournal = "diag.Journal"
	methodRun      = "run"
)

// journalApp is app name served by diag.Journal with replicas replicas,
// journaling to journal, its async method "run" tuned so that a killed
// worker's jobs move within seconds and chaos does not exhaust attempts.
func journalApp(name string, replicas int, journal string) config.Application {
	uc, _ := json.Marshal(map[string]string{"journal": journal})
	d := deployment{app: name, handler: handlerJournal, replicas: replicas, cpu: 0.5, maxOngoing: 16, userConfig: uc,
		gracefulShutdown: 5 * time.Second}
	a := d.application()
	a.Deployments[0].AsyncMethods = []config.AsyncMethod{{
		Name: methodRun, MaxQueued: 100000, MaxRunning: 16, MaxAttempts: 20,
		LeaseTimeout: config.Duration(3 * time.Second), Backoff: []config.Duration{config.Duration(200 * time.Millisecond)},
	}}
	return a
}

// jobSubmit is one job a jobLoad submitted and what the submit got.
type jobSubmit struct {
	ID         string
	Start, End time.Time
	Status     int // the last answer; 0 = transport error only
	Attempts   int
	Tries      []string // each attempt: how long it took and what it got
}

// Accepted: the fleet answered 202 (stored) or 200 (a repeated submit of
// a stored job: the first answer was lost on the way).
func (j jobSubmit) Accepted() bool {
	return j.Status == http.StatusAccepted || j.Status == http.StatusOK
}

// jobLoad submits a job with a fresh client-chosen id every interval to
// the ingresses, round-robin, as a careful client does: a submit whose
// answer is a transport error or a 5xx is repeated with the same id (to
// the next ingress) until it is answered or perSubmit passes. It owns its
// goroutine; stop waits for it.
type jobLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	submits []jobSubmit // guarded by mu
}

func startJobs(t *testing.T, ingresses func() []string, path, prefix string, every time.Duration, ms int, perSubmit time.Duration) *jobLoad {
	ctx, cancel := context.WithCancel(context.Background())
	jl := &jobLoad{cancel: cancel}
	var inflight sync.WaitGroup
	jl.wg.Add(1)
	go func() {
		defer jl.wg.Done()
		defer inflight.Wait()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("%s-%06d", prefix, n)
			inflight.Add(1)
			go func() { // submits overlap: one slow answer does not stop the stream
				defer inflight.Done()
				j := submitJob(ctx, ingresses, path, id, ms, perSubmit, n)
				jl.mu.Lock()
				jl.submits = append(jl.submits, j)
				jl.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(jl.stop)
	return jl
}

func submitJob(ctx context.Context, ingresses func() []string, path, id string, ms int, perSubmit time.Duration, n int) jobSubmit {
	j := jobSubmit{ID: id, Start: time.Now()}
	deadline := j.Start.Add(perSubmit)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		urls := ingresses()
		if len(urls) == 0 {
			break
		}
		u := fmt.Sprintf("%s%s?request_id=%s&ms=%d", urls[(n+attempt)%len(urls)], path, id, ms)
		rctx, cancel := context.WithDeadline(context.Background(), deadline) // not ctx: a submit in flight finishes
		began := time.Now()
		r, err := fleet.Do(rctx, http.MethodPost, u, nil, nil)
		cancel()
		j.Attempts++
		j.Status = r.Status
		if len(j.Tries) < 16 {
			what := strconv.Itoa(r.Status)
			if err != nil {
				what = err.Error()
			}
			j.Tries = append(j.Tries, fmt.Sprintf("%v:%s", time.Since(began).Round(time.Millisecond), what))
		}
		if err == nil && r.Status < 500 {
			break
		}
		// Back off before the same id goes to the next ingress: 100 ms,
		// doubling to 1 s, or the answer's Retry-After if shorter.
		wait := min(100*time.Millisecond<<min(attempt, 4), time.Second)
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err == nil && ra > 0 {
			wait = min(wait, time.Duration(ra)*time.Second)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
	j.End = time.Now()
	return j
}

func (jl *jobLoad) stop() {
	jl.cancel()
	jl.wg.Wait()
}

// waitAccepted waits until n submits were accepted: the job path is in
// use (every ingress's job queue opened) before a fault is measured.
func (jl *jobLoad) waitAccepted(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	fleet.Eventually(t, timeout, fmt.Sprintf("%d accepted job submits", n), func() error {
		got := 0
		for _, s := range jl.all() {
			if s.Accepted() {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

func (jl *jobLoad) all() []jobSubmit {
	jl.mu.Lock()
	defer jl.mu.Unlock()
	return append([]jobSubmit(nil), jl.submits...)
}

// jobRun is what the journal says about one job.
type jobRun struct {
	starts   []time.Time
	attempts []string // "attempt@replica" of each start
	dones    int
}

// readJournal parses diag.Journal's lines per job id.
func readJournal(t *testing.T, path string) map[string]*jobRun {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return map[string]*jobRun{}
	}
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	defer f.Close()
	runs := map[string]*jobRun{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 5 {
			t.Fatalf("journal line %q: want <event> <id> <attempt> <replica> <nanos>", sc.Text())
		}
		ns, err := strconv.ParseInt(fs[4], 10, 64)
		if err != nil {
			t.Fatalf("journal line %q: %v", sc.Text(), err)
		}
		r := runs[fs[1]]
		if r == nil {
			r = &jobRun{}
			runs[fs[1]] = r
		}
		switch fs[0] {
		case "start":
			r.starts = append(r.starts, time.Unix(0, ns))
			r.attempts = append(r.attempts, fs[2]+"@"+fs[3])
		case "done":
			r.dones++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("journal: %v", err)
	}
	return runs
}

// jobAccount is the fate of the jobs a jobLoad submitted.
type jobAccount struct {
	Submitted, Accepted, Unanswered int
	Succeeded, Failed, Lost         int
	// RanTwice: jobs whose handler returned more than once (an attempt
	// finished but its worker died before the record said so: run again,
	// at least once as documented).
	RanTwice int
	// RecordedTwice: jobs that started again after their terminal record
	// was written — what must never happen.
	RecordedTwice int
	Problems      []string
	lost, twice   map[string]bool // the ids counted in Lost and RecordedTwice
}

func (a jobAccount) String() string {
	return fmt.Sprintf("%d submitted, %d accepted (%d unanswered), %d succeeded, %d failed, %d lost, %d ran twice, %d recorded twice",
		a.Submitted, a.Accepted, a.Unanswered, a.Succeeded, a.Failed, a.Lost, a.RanTwice, a.RecordedTwice)
}

// accountJobs waits (up to timeout) until every accepted job's record is
// terminal, then checks each one against the journal. status reads a
// job's record (nil error and found=false: no record).
func accountJobs(t *testing.T, submits []jobSubmit, journal string, timeout time.Duration,
	status func(id string) (jobRecordTimes, bool, error)) jobAccount {
	t.Helper()
	a := jobAccount{lost: map[string]bool{}, twice: map[string]bool{}}
	a.Submitted = len(submits)
	sort.Slice(submits, func(i, j int) bool { return submits[i].ID < submits[j].ID })
	records := map[string]jobRecordTimes{}
	deadline := time.Now().Add(timeout)
	for _, s := range submits {
		if !s.Accepted() {
			a.Unanswered++
			continue
		}
		a.Accepted++
		for {
			rec, found, err := status(s.ID)
			if err == nil && found && rec.terminal() {
				records[s.ID] = rec
				break
			}
			if time.Now().After(deadline) {
				a.Lost++
				a.lost[s.ID] = true
				a.Problems = append(a.Problems, fmt.Sprintf("job %s (accepted %s): no terminal record after %v: %+v found=%v err=%v",
					s.ID, s.End.Format("15:04:05.000"), timeout, rec, found, err))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	runs := readJournal(t, journal)
	for id, rec := range records {
		if rec.Status == "SUCCEEDED" {
			a.Succeeded++
		} else {
			a.Failed++
			a.Problems = append(a.Problems, fmt.Sprintf("job %s ended %s: %s", id, rec.Status, rec.Error))
		}
		r := runs[id]
		if r == nil {
			if rec.Status == "SUCCEEDED" {
				a.Problems = append(a.Problems, fmt.Sprintf("job %s SUCCEEDED without a run in the journal", id))
			}
			continue
		}
		if r.dones > 1 {
			a.RanTwice++
		}
		for _, st := range r.starts {
			if !rec.FinishedAt.IsZero() && st.After(rec.FinishedAt) {
				a.RecordedTwice++
				a.twice[id] = true
				a.Problems = append(a.Problems, fmt.Sprintf("job %s started at %s, after its %s record (finished %s, %d attempts); its starts (attempt@replica): %v",
					id, st.Format("15:04:05.000"), rec.Status, rec.FinishedAt.Format("15:04:05.000"), rec.Attempts, r.attempts))
				break
			}
		}
	}
	return a
}

// jobRecordTimes is the part of a job record the accounting reads.
type jobRecordTimes struct {
	Status     string    `json:"status"`
	Attempts   int       `json:"attempts"`
	Error      string    `json:"error"`
	FinishedAt time.Time `json:"finished_at"`
}

func (r jobRecordTimes) terminal() bool {
	switch r.Status {
	case "SUCCEEDED", "FAILED", "CANCELLED":
		return true
	}
	return false
}

// statusVia reads job records through the job endpoints of the ingresses.
func statusVia(ingresses func() []string, path string) func(id string) (jobRecordTimes, bool, error) {
	n := 0
	return func(id string) (jobRecordTimes, bool, error) {
		var rec jobRecordTimes
		urls := ingresses()
		if len(urls) == 0 {
			return rec, false, fmt.Errorf("no ingress")
		}
		n++
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := fleet.Do(ctx, http.MethodGet, urls[n%len(urls)]+path+"/status?request_id="+id, nil, nil)
		if err != nil {
			return rec, false, err
		}
		switch r.Status {
		case http.StatusOK:
		case http.StatusNotFound:
			return rec, false, nil
		default:
			return rec, false, fmt.Errorf("status %s: %v", id, r)
		}
		if err := json.Unmarshal(r.Body, &rec); err != nil {
			return rec, false, fmt.Errorf("status %s: %w", id, err)
		}
		return rec, true, nil
	}
}
