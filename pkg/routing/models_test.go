package routing

import (
	"context"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
)

// newDep builds a deployment of replicas with the given loads and
// reported models (max 8 each).
func newDep(loads []int, models [][]string) *deployment {
	d := &deployment{byID: map[string]*replica{}}
	for i, l := range loads {
		p := &replica{id: string(rune('a' + i)), max: 8, reported: l}
		p.setModels(models[i], time.Time{})
		d.replicas = append(d.replicas, p)
		d.byID[p.id] = p
	}
	return d
}

func newReq(model string) *request {
	q := &request{model: model}
	q.tried = q.triedBuf[:0]
	return q
}

func TestPickModelPrefersTheLeastLoadedHolder(t *testing.T) {
	now := time.Unix(1000, 0)
	d := newDep([]int{0, 5, 3, 0}, [][]string{{"m2"}, {"m1", "m3"}, {"m1"}, nil})
	for range 50 {
		if p := d.pick(newReq("m1"), now); p == nil || p.id != "c" {
			t.Fatalf("pick(m1) = %v, want c (holds m1, less loaded than b)", p)
		}
	}
	// A full holder is skipped for the other holder even if it is busier.
	d.byID["c"].reported = 8
	if p := d.pick(newReq("m1"), now); p == nil || p.id != "b" {
		t.Fatalf("pick(m1) with c full = %v, want b", p)
	}
	// No eligible holder: the replicas with room holding the fewest models.
	d.byID["b"].draining = true
	for range 50 {
		if p := d.pick(newReq("m1"), now); p == nil || p.id != "d" {
			t.Fatalf("pick(m1) with holders unavailable = %v, want d (holds no model)", p)
		}
	}
	// A model nobody holds goes to a replica with the fewest models.
	for range 50 {
		if p := d.pick(newReq("m9"), now); p == nil || p.id != "d" {
			t.Fatalf("pick(m9) = %v, want d", p)
		}
	}
	// No model id: plain power of two choices over every eligible replica.
	seen := map[string]bool{}
	for range 200 {
		if p := d.pick(newReq(""), now); p != nil {
			seen[p.id] = true
		}
	}
	if !seen["a"] || !seen["d"] || seen["b"] || seen["c"] {
		t.Fatalf("pick(no model) chose %v, want a and d only (b draining, c full)", seen)
	}
}

func TestPickModelCountsRecentlySentModels(t *testing.T) {
	now := time.Unix(1000, 0)
	d := newDep([]int{0, 0, 0}, [][]string{nil, nil, nil})
	first := d.pick(newReq("m1"), now)
	if first == nil {
		t.Fatal("pick(m1) = nil")
	}
	first.noteSent("m1", now)
	// Before any report, the router remembers where it sent m1 ...
	for range 20 {
		if p := d.pick(newReq("m1"), now.Add(10*time.Millisecond)); p != first {
			t.Fatalf("pick(m1) right after sending it to %s = %s, want %s", first.id, p.id, first.id)
		}
		// ... and sends a new model elsewhere (first holds more models).
		if p := d.pick(newReq("m2"), now.Add(10*time.Millisecond)); p == first {
			t.Fatalf("pick(m2) = %s, which already takes m1; want a replica holding none", p.id)
		}
	}
	// A report without m1 does not erase it within the grace period ...
	first.setModels(nil, now.Add(20*time.Millisecond))
	if !first.holds("m1", now.Add(20*time.Millisecond)) {
		t.Fatal("holds(m1) = false right after a report that predates the request")
	}
	// ... but after it the reports are the truth.
	later := now.Add(modelGrace + time.Millisecond)
	first.setModels([]string{"m3"}, later)
	if first.holds("m1", later) || !first.holds("m3", later) || len(first.sent) != 0 {
		t.Fatalf("after the grace: holds(m1), holds(m3), sent = %v, %v, %v, want false, true, []",
			first.holds("m1", later), first.holds("m3", later), first.sent)
	}
	// Unsorted reports are accepted.
	first.setModels([]string{"z", "b"}, later)
	if !first.holds("b", later) || !first.holds("z", later) {
		t.Fatalf("holds after an unsorted report = false, want true")
	}
}

func TestPickWithoutModelDoesNotAllocate(t *testing.T) {
	now := time.Unix(1000, 0)
	d := newDep([]int{1, 2, 3}, [][]string{nil, {"m1"}, nil})
	q := newReq("")
	if n := testing.AllocsPerRun(100, func() { d.pick(q, now) }); n != 0 {
		t.Errorf("pick(no model) allocates %v times, want 0", n)
	}
	qm := newReq("m1")
	if n := testing.AllocsPerRun(100, func() { d.pick(qm, now) }); n != 0 {
		t.Errorf("pick(model) allocates %v times, want 0", n)
	}
}

// BenchmarkPick measures one pick among 8 replicas without a model id
// (the path every request without one takes) and with one, in the same
// run: compare the two.
func BenchmarkPick(b *testing.B) {
	now := time.Unix(1000, 0)
	d := newDep([]int{1, 2, 3, 0, 4, 2, 1, 3}, [][]string{{"m1", "m2"}, {"m3"}, nil, {"m4", "m5"}, {"m6"}, nil, {"m7"}, {"m8"}})
	for _, model := range []string{"", "m4", "m9"} {
		name := "model=" + model
		if model == "" {
			name = "no-model"
		}
		b.Run(name, func(b *testing.B) {
			q := newReq(model)
			b.ReportAllocs()
			for b.Loop() {
				if d.pick(q, now) == nil {
					b.Fatal("no replica picked")
				}
			}
		})
	}
}

// inProcess is a LocalReplica that pickModel only needs to see.
type inProcess struct{}

func (inProcess) CallLocal(context.Context, *nats.Msg, func(*nats.Msg) error, func(*nats.Msg)) protocol.ErrorCode {
	return protocol.ErrUnavailable
}
func (inProcess) CancelLocal(string) {}

// TestPickModelPrefersALocalHolderOnATie: among holders of the model
// equally loaded, the replica of this process is chosen (prefer-local);
// a local holder more loaded than a remote one is not.
func TestPickModelPrefersALocalHolderOnATie(t *testing.T) {
	now := time.Unix(1000, 0)
	d := newDep([]int{2, 2, 0}, [][]string{{"m1"}, {"m1"}, nil})
	d.byID["b"].local, d.locals = inProcess{}, 1
	for range 50 {
		if p := d.pick(newReq("m1"), now); p == nil || p.id != "b" {
			t.Fatalf("pick(m1) = %v, want b (holds m1 as loaded as a, and local)", p)
		}
	}
	d.byID["b"].reported = 3
	if p := d.pick(newReq("m1"), now); p == nil || p.id != "a" {
		t.Fatalf("pick(m1) with the local holder busier = %v, want a", p)
	}
}
