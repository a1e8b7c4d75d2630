package trips_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/examples/trips"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/servetest"
	"github.com/jetserve/jetserve/pkg/serve/workflowtest"
)

func local(t *testing.T) *serve.Local {
	t.Helper()
	reg := serve.NewRegistry()
	if err := trips.Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := reg.DeclareApp(trips.App()); err != nil {
		t.Fatal(err)
	}
	app, err := reg.BuildApp("trips")
	if err != nil {
		t.Fatal(err)
	}
	return servetest.Local(t, reg, app)
}

func args(t *testing.T, v any) serve.Args {
	t.Helper()
	a, err := serve.ArgsOf(v)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ledger(t *testing.T, l *serve.Local, trip string) []string {
	t.Helper()
	resp, err := l.Ingress().Call(context.Background(), &serve.Request{Method: "GET", Path: "/ledger", Query: map[string][]string{"trip_id": {trip}}})
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Events []string }
	if err := resp.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Events
}

// TestTripCompensatesOnceEach: the fault flag fails the flight; the car
// and the hotel are cancelled once each, in reverse, even when the worker
// crashes just after the car's cancellation was journaled.
func TestTripCompensatesOnceEach(t *testing.T) {
	l := local(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l.CrashWorkflowAt("cancel-car", true)
	if _, _, err := l.SubmitJob(ctx, trips.WorkflowBook, "t1", args(t, trips.Trip{TripID: "t1", FailFlight: true})); err != nil {
		t.Fatal(err)
	}
	rec, err := l.WaitJob(ctx, trips.WorkflowBook, "t1")
	if err != nil || rec.Status != serve.JobFailed || !strings.Contains(rec.Error, "no flight available") {
		t.Fatalf("run = %+v, %v; want FAILED with the flight's error", rec, err)
	}
	want := []string{"reserved hotel-t1-0", "reserved car-t1-1", "cancelled car-t1-1", "cancelled hotel-t1-0"}
	if got := ledger(t, l, "t1"); !slices.Equal(got, want) {
		t.Errorf("ledger = %q, want %q", got, want)
	}
}

func TestTripBooksAndAwaitsConfirmation(t *testing.T) {
	l := local(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := l.SubmitJob(ctx, trips.WorkflowBook, "t2", args(t, trips.Trip{AwaitConfirm: true})); err != nil {
		t.Fatal(err)
	}
	for {
		rec, _ := l.JobStatus(trips.WorkflowBook, "t2")
		if rec.Status == serve.JobSuspended {
			break
		}
		if rec.Status.Terminal() || ctx.Err() != nil {
			t.Fatalf("run = %+v, want SUSPENDED awaiting confirm", rec)
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := l.SignalWorkflow(trips.WorkflowBook, "t2", "confirm", "c1", map[string]string{"by": "ann"}); err != nil {
		t.Fatal(err)
	}
	rec, err := l.WaitJob(ctx, trips.WorkflowBook, "t2")
	var b trips.Booking
	if err == nil {
		err = json.Unmarshal(rec.Result, &b)
	}
	if err != nil || rec.Status != serve.JobSucceeded || b.Confirmed != "ann" || b.Flight != "flight-t2-2" || b.TripID != "t2" {
		t.Fatalf("run = %+v (%+v), %v; want SUCCEEDED, confirmed by ann", rec, b, err)
	}
	// Its journal replays on this code (what CI does with recorded ones).
	h, err := l.WorkflowHistory(trips.WorkflowBook, "t2")
	if err != nil {
		t.Fatal(err)
	}
	if err := workflowtest.Replay(trips.Book(trips.NewLedger()), trips.Trip{AwaitConfirm: true}, h); err != nil {
		t.Errorf("Replay = %v", err)
	}
}

// TestRecordedJournalReplays checks the book workflow against a journal
// recorded from an earlier version (testdata): a change that breaks
// running trips fails here, naming the step.
func TestRecordedJournalReplays(t *testing.T) {
	workflowtest.ReplayJournal(t, trips.Book(trips.NewLedger()), trips.Trip{TripID: "t1", FailFlight: true},
		filepath.Join("testdata", "failed-flight.json"))
}
