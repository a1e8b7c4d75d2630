// Package trips is the trip booking of the distributed-coroutines RFC as
// a durable workflow with compensation (a saga): the workflow "book"
// reserves a hotel, a car and a flight, each a journaled step whose undo
// is registered with wf.OnFailure; when a step fails (the input's
// fail_flight fault flag makes the flight fail) the car and then the hotel
// are cancelled, each exactly once, and the run ends FAILED with the
// flight's error. A confirmation signal may be awaited (await_confirm):
// the run is then suspended, holding no slot, until
// POST /trips/book/signal?request_id=…&name=confirm.
//
// The "external systems" are the Ledger: reservations keyed by the step's
// idempotency key, so a repeated call changes nothing — what a real
// booking API does with an idempotency key. The Travel deployment serves
// it: GET /trips/ledger?trip_id=… lists a trip's reservations and
// cancellations.
package trips

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
)

// HandlerTravel is the Travel deployment's handler name; WorkflowBook the
// workflow's name.
const (
	HandlerTravel = "trips.Travel"
	WorkflowBook  = "book"
)

// Trip is the book workflow's input.
type Trip struct {
	TripID string `json:"trip_id"`
	// FailFlight is the fault flag: the flight step fails (no retry).
	FailFlight bool `json:"fail_flight"`
	// AwaitConfirm suspends the run after the bookings until the signal
	// "confirm" comes.
	AwaitConfirm bool `json:"await_confirm"`
}

// Booking is the book workflow's result.
type Booking struct {
	TripID    string `json:"trip_id"`
	Hotel     string `json:"hotel"`
	Car       string `json:"car"`
	Flight    string `json:"flight"`
	Confirmed string `json:"confirmed_by,omitempty"`
}

// Ledger is the simulated booking systems: what was reserved and
// cancelled, once per idempotency key. Safe for concurrent use.
type Ledger struct {
	mu     sync.Mutex
	byKey  map[string]string   // guarded by mu: idempotency key → reservation id
	events map[string][]string // guarded by mu: trip → "reserved hotel h-…", "cancelled h-…"
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{byKey: map[string]string{}, events: map[string][]string{}}
}

// Reserve books what for the trip under key (a repeated key returns the
// first reservation).
func (l *Ledger) Reserve(key, trip, what string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if id, ok := l.byKey[key]; ok {
		return id
	}
	id := fmt.Sprintf("%s-%s", what, key)
	l.byKey[key] = id
	l.events[trip] = append(l.events[trip], "reserved "+id)
	return id
}

// Cancel cancels a reservation once per key.
func (l *Ledger) Cancel(key, trip, id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.byKey[key]; ok {
		return "cancelled " + id
	}
	l.byKey[key] = id
	l.events[trip] = append(l.events[trip], "cancelled "+id)
	return "cancelled " + id
}

// Events lists a trip's ledger, in order.
func (l *Ledger) Events(trip string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string{}, l.events[trip]...)
}

// Book is the trip booking workflow over ledger l.
func Book(l *Ledger) *serve.WorkflowDef {
	return serve.NewWorkflow(WorkflowBook, func(wf serve.Workflow, t Trip) (Booking, error) {
		if t.TripID == "" {
			t.TripID = wf.RunID()
		}
		b := Booking{TripID: t.TripID}
		reserve := func(what string, out *string, fail bool) error {
			err := wf.Step("book-"+what, func(s serve.StepContext) (any, error) {
				if fail {
					return nil, serve.Errorf(http.StatusConflict, "no %s available for trip %s", what, t.TripID)
				}
				return l.Reserve(s.IdempotencyKey(), t.TripID, what), nil
			}).Decode(out)
			if err != nil {
				return fmt.Errorf("book %s: %w", what, err)
			}
			id := *out
			wf.OnFailure("cancel-"+what, func(s serve.StepContext) (any, error) {
				return l.Cancel(s.IdempotencyKey(), t.TripID, id), nil
			})
			return nil
		}
		if err := reserve("hotel", &b.Hotel, false); err != nil {
			return Booking{}, err
		}
		if err := reserve("car", &b.Car, false); err != nil {
			return Booking{}, err
		}
		if err := reserve("flight", &b.Flight, t.FailFlight); err != nil {
			return Booking{}, err
		}
		if t.AwaitConfirm {
			var c struct {
				By string `json:"by"`
			}
			if err := wf.Await("confirm", &c); err != nil {
				return Booking{}, err
			}
			b.Confirmed = c.By
		}
		return b, nil
	})
}

// Register adds the Travel deployment with the book workflow to reg.
func Register(reg *serve.Registry) error {
	l := NewLedger()
	return reg.Register(HandlerTravel, func(context.Context, serve.Init) (serve.Handler, error) { return travel{l}, nil },
		serve.WithWorkflows(Book(l)))
}

// travel serves the ledger.
type travel struct{ l *Ledger }

func (t travel) ServeRequest(_ context.Context, req *serve.Request) (*serve.Response, error) {
	if serve.MethodName(req) != "ledger" {
		return nil, serve.Errorf(http.StatusNotFound, "unknown path %s: GET /ledger?trip_id=…, or the book workflow's endpoints", req.Path)
	}
	trip := req.Query.Get("trip_id")
	if trip == "" {
		return nil, serve.Errorf(http.StatusBadRequest, "trip_id is required")
	}
	ev := t.l.Events(trip)
	return serve.JSON(map[string]any{"trip_id": trip, "events": ev})
}

// App declares the trips application.
func App() serve.App {
	return serve.App{
		Name: "trips", RoutePrefix: "/trips", Ingress: "Travel",
		Deployments: []serve.Deployment{
			serve.Deploy("Travel", HandlerTravel, serve.NumReplicas(1), serve.MaxOngoingRequests(64),
				// A saga waits on its steps most of the time (a suspended run
				// holds no slot): no CPU reserved, as Ray's num_cpus=0 for
				// orchestrators, so it fits beside the text app on 2 cores.
				serve.CPU(0),
				serve.GracefulShutdownTimeout(10*time.Second),
				serve.Comment("The trip booking saga (examples/trips): POST /trips/book {\"trip_id\": \"t1\", \"fail_flight\": true}\n"+
					"→ 202; GET /trips/book/history?request_id=… shows each step and compensation.")),
		},
	}
}
