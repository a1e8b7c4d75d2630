package dashboard

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// JobSummary is one job in a snapshot (a record without its arguments and
// result).
type JobSummary struct {
	ID       string      `json:"request_id"`
	Status   jobs.Status `json:"status"`
	Retrying bool        `json:"retrying,omitempty"`
	Attempts int         `json:"attempts"`
	Progress float64     `json:"progress"`
	Message  string      `json:"message,omitempty"`
	Error    string      `json:"error,omitempty"`
	Replica  string      `json:"replica,omitempty"`
	// Waiting is what a suspended workflow run awaits.
	Waiting    []string  `json:"waiting,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// MethodJobs is one async method's jobs in a snapshot.
type MethodJobs struct {
	App        string `json:"app"`
	Deployment string `json:"deployment"`
	Method     string `json:"method"`
	// Queued, Running and DeadLettered are the latest poll of the stream
	// (jobs.Queue.Backlog); OldestAgeSeconds is the age of the oldest job
	// queued or running.
	Queued           int     `json:"queued"`
	Running          int     `json:"running"`
	DeadLettered     int     `json:"dead_lettered"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// Succeeded, Failed and Cancelled count the records in the method's
	// bucket (jobs within their retention).
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Cancelled int `json:"cancelled"`
	// Workflow marks a durable workflow; Suspended counts its runs
	// waiting for an event (records SUSPENDED: no slot, no message).
	Workflow  bool `json:"workflow,omitempty"`
	Suspended int  `json:"suspended"`
	// Recent are the most recently updated jobs, newest first.
	Recent []JobSummary `json:"recent"`
	// PolledAt is when Queued…DeadLettered were read; Error says why the
	// last poll failed, if it did.
	PolledAt time.Time `json:"polled_at,omitzero"`
	Error    string    `json:"error,omitempty"`
}

// recentJobs is how many jobs per method a snapshot lists.
const recentJobs = 8

// method is one async method the dashboard follows: its records (a
// kvfollow copy of its records bucket, so the counts and recent jobs are
// live without polling) and its latest backlog poll.
type method struct {
	app, dep, name string
	retention      time.Duration
	workflow       bool

	stop    context.CancelFunc // ends the records follower; nil when none runs
	watchMu sync.Mutex
	recs    *kvfollow.Follower[JobSummary] // guarded by watchMu; nil until the bucket exists

	backlog  jobs.Backlog // owned by Run's loop, copied under Dashboard.mu
	polledAt time.Time
	pollErr  string
}

// methodKey is "<app>/<method>".
func methodKey(app, name string) string { return app + "/" + name }

// effectiveMethods lists every async method of t (the config's
// async_methods merged with the SDK defaults workers advertised: one
// fleetstate.AsyncTable, as the ingress and the autoscaler build it).
func effectiveMethods(t *fleetstate.AsyncTable) map[string]*method {
	out := map[string]*method{}
	for _, m := range t.Methods() {
		out[methodKey(m.App, m.Config.Name)] = &method{app: m.App, dep: m.Deployment, name: m.Config.Name,
			retention: m.Config.Retention.D(), workflow: m.Config.Workflow}
	}
	return out
}

// followRecords follows the method's records bucket until ctx ends. It
// returns at once, with jetstream.ErrBucketNotFound, while the method has
// never been used (the next poll tries again).
func (m *method) followRecords(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names jobs.Names, log zerolog.Logger) error {
	kv, err := js.KeyValue(ctx, names.Records(m.app, m.name))
	if err != nil {
		return err
	}
	f := kvfollow.New(nc, kv, kvfollow.Options[JobSummary]{Decode: decodeJob, Log: log})
	m.watchMu.Lock()
	m.recs = f
	m.watchMu.Unlock()
	return f.Run(ctx)
}

// decodeJob summarises a job record.
func decodeJob(_ string, data []byte) (JobSummary, error) {
	var r jobs.Record
	if err := json.Unmarshal(data, &r); err != nil {
		return JobSummary{}, err
	}
	return JobSummary{ID: r.ID, Status: r.Status, Retrying: r.Retrying, Attempts: r.Attempts,
		Progress: r.Progress, Message: r.Message, Error: r.Error, Replica: r.Replica, Waiting: r.Waiting,
		CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, UpdatedAt: r.UpdatedAt}, nil
}

// records returns the method's records: those not finished, and the
// finished ones within its retention; the others are forgotten (the
// bucket's TTL removes them).
func (m *method) records(now time.Time) map[string]JobSummary {
	m.watchMu.Lock()
	f := m.recs
	m.watchMu.Unlock()
	if f == nil {
		return nil
	}
	recs := f.Snapshot()
	if m.retention <= 0 {
		return recs
	}
	var expired []string
	for k, r := range recs {
		if r.Status.Terminal() && now.Sub(r.UpdatedAt) > m.retention { // one not finished is kept
			expired = append(expired, k)
			delete(recs, k)
		}
	}
	f.Forget(expired...)
	return recs
}

// countByStatus counts records by status (never nil).
func countByStatus(recs map[string]JobSummary) map[jobs.Status]int {
	n := map[jobs.Status]int{}
	for _, r := range recs {
		n[r.Status]++
	}
	return n
}

// summary is the method's part of a snapshot.
func (m *method) summary(now time.Time) MethodJobs {
	out := MethodJobs{App: m.app, Deployment: m.dep, Method: m.name, Workflow: m.workflow, Queued: m.backlog.Queued,
		Running: m.backlog.Running, DeadLettered: m.backlog.DeadLettered, PolledAt: m.polledAt, Error: m.pollErr}
	if !m.backlog.Oldest.IsZero() {
		out.OldestAgeSeconds = max(now.Sub(m.backlog.Oldest), 0).Seconds()
	}
	recs := m.records(now)
	n := countByStatus(recs)
	out.Succeeded, out.Failed, out.Cancelled, out.Suspended = n[jobs.Succeeded], n[jobs.Failed], n[jobs.Cancelled], n[jobs.Suspended]
	all := make([]JobSummary, 0, len(recs))
	for _, r := range recs {
		all = append(all, r)
	}
	slices.SortFunc(all, func(a, b JobSummary) int {
		if c := b.UpdatedAt.Compare(a.UpdatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	out.Recent = all[:min(len(all), recentJobs)]
	return out
}
