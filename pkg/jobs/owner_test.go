package jobs

import (
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
)

// A job's owner is recorded at submit, kept when a runner claims and
// finishes it, and List filters by it.
func TestOwnerKeptAndListed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	ctx := ctxT(t)
	for id, owner := range map[string]string{"a1": "key:alice", "a2": "key:alice", "b1": "key:bob"} {
		if _, _, err := e.q.Submit(ctx, testApp, testDep, m, id, nil, Owner(owner)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := e.q.Submit(ctx, testApp, testDep, m, "none", nil); err != nil {
		t.Fatal(err)
	}
	list := func(opts ...ListOption) map[string]string {
		recs, _, err := e.q.List(ctx, testApp, "train", "", 0, "", opts...)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range recs {
			got[r.ID] = r.Owner
		}
		return got
	}
	if got := list(OwnedBy("key:alice")); len(got) != 2 || got["a1"] != "key:alice" || got["a2"] != "key:alice" {
		t.Fatalf("List(OwnedBy alice) of queued jobs = %v, want a1, a2", got)
	}
	startRunner(t, e, e.nc, 4, handlerFunc(func(serve.JobContext, *serve.Job) (any, error) { return "ok", nil }), "r1", m)
	for _, id := range []string{"a1", "a2", "b1", "none"} {
		waitStatus(t, e.q, "train", id, Succeeded, 10*time.Second)
	}
	if rec, err := e.q.Status(ctx, testApp, "train", "b1"); err != nil || rec.Owner != "key:bob" {
		t.Fatalf("Status(b1) = %+v, %v; want owner key:bob kept through the run", rec, err)
	}
	if got := list(OwnedBy("key:bob")); len(got) != 1 || got["b1"] != "key:bob" {
		t.Fatalf("List(OwnedBy bob) of finished jobs = %v, want b1", got)
	}
	if got := list(OwnedBy("")); len(got) != 1 || got["none"] != "" {
		t.Fatalf("List(OwnedBy \"\") = %v, want the job without an owner", got)
	}
	if got := list(); len(got) != 4 {
		t.Fatalf("List() = %v, want all four", got)
	}
}
