// Package microsvc serves a NATS micro service (the protocol of nats.go's
// micro package and `nats micro ls|info|stats|ping`) whose endpoints answer
// asynchronously.
//
// nats.go's micro times an endpoint by its handler call and takes a
// service-wide lock per request. A replica's call handler only admits a
// request and hands it to another goroutine, so micro's table showed the
// admission (microseconds) and counted probes and cancels as requests.
// Here an endpoint either reports its own counts (Endpoint.Stats: the
// replica's served requests, errors and handler time) or, with no Stats,
// is timed around its handler call as micro does. The discovery verbs and
// response documents are micro's own (micro.Ping, micro.Info,
// micro.Stats), so every micro client reads them unchanged.
//
// Concurrency: a Service is safe for concurrent use. Its handlers run on
// the subscriptions' goroutines (one per endpoint, in order); Stop drains
// them.
package microsvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
)

// Config names a service, as micro.Config does.
type Config struct {
	Name        string // letters, digits, '-' and '_'
	Version     string // semantic version
	Description string
	Metadata    map[string]string
}

// Endpoint is one endpoint: its handler gets every message on Subject.
type Endpoint struct {
	Name    string
	Subject string
	Handler nats.MsgHandler
	// Stats reports the endpoint's counts and Data for STATS (Name and
	// Subject are filled in). Nil: the service counts the handler's calls
	// and times them.
	Stats func() micro.EndpointStats
}

// Service is a running micro service.
type Service struct {
	nc      *nats.Conn
	cfg     Config
	id      string
	started time.Time
	eps     []*endpoint

	mu      sync.Mutex // guards subs, stopped
	subs    []*nats.Subscription
	stopped bool
}

type endpoint struct {
	Endpoint
	mu    sync.Mutex // guards timed
	timed micro.EndpointStats
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9\-_]+$`)

// Start subscribes the endpoints and the discovery verbs ($SRV.PING,
// $SRV.INFO, $SRV.STATS: all services, this name, this instance).
func Start(nc *nats.Conn, cfg Config, eps ...Endpoint) (*Service, error) {
	if !nameRE.MatchString(cfg.Name) {
		return nil, fmt.Errorf("micro service name %q: must be letters, digits, '-' or '_'", cfg.Name)
	}
	s := &Service{nc: nc, cfg: cfg, id: nuid.Next(), started: time.Now().UTC()}
	for _, e := range eps {
		if e.Name == "" || e.Subject == "" || e.Handler == nil {
			return nil, fmt.Errorf("micro service %s: endpoint %q needs a name, a subject and a handler", cfg.Name, e.Name)
		}
		ep := &endpoint{Endpoint: e}
		if e.Stats == nil {
			ep.Handler = ep.time(e.Handler)
		}
		s.eps = append(s.eps, ep)
	}
	for _, ep := range s.eps {
		if err := s.subscribe(ep.Subject, ep.Handler); err != nil {
			return nil, errors.Join(err, s.Stop())
		}
	}
	verbs := map[string]func() any{
		"PING":  func() any { return micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType} },
		"INFO":  s.info,
		"STATS": s.stats,
	}
	for verb, doc := range verbs {
		answer := func(m *nats.Msg) {
			if b, err := json.Marshal(doc()); err == nil {
				_ = m.Respond(b) // a requester gone is no error of ours
			}
		}
		for _, subj := range []string{micro.APIPrefix + "." + verb, micro.APIPrefix + "." + verb + "." + cfg.Name, micro.APIPrefix + "." + verb + "." + cfg.Name + "." + s.id} {
			if err := s.subscribe(subj, answer); err != nil {
				return nil, errors.Join(err, s.Stop())
			}
		}
	}
	return s, nil
}

func (s *Service) subscribe(subj string, h nats.MsgHandler) error {
	sub, err := s.nc.Subscribe(subj, h)
	if err != nil {
		return fmt.Errorf("micro service %s: subscribe %s: %w", s.cfg.Name, subj, err)
	}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	return nil
}

// Stop drains every subscription: messages already received are still
// handled. Stopping twice is a no-op.
func (s *Service) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	var errs []error
	for _, sub := range s.subs {
		if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("drain %s: %w", sub.Subject, err))
		}
	}
	return errors.Join(errs...)
}

// ID is this instance's id (micro's service id).
func (s *Service) ID() string { return s.id }

func (s *Service) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: s.cfg.Name, ID: s.id, Version: s.cfg.Version, Metadata: s.cfg.Metadata}
}

func (s *Service) info() any {
	in := micro.Info{ServiceIdentity: s.identity(), Type: micro.InfoResponseType, Description: s.cfg.Description,
		Endpoints: make([]micro.EndpointInfo, 0, len(s.eps))}
	for _, ep := range s.eps {
		in.Endpoints = append(in.Endpoints, micro.EndpointInfo{Name: ep.Name, Subject: ep.Subject})
	}
	return in
}

func (s *Service) stats() any {
	st := micro.Stats{ServiceIdentity: s.identity(), Type: micro.StatsResponseType, Started: s.started,
		Endpoints: make([]*micro.EndpointStats, 0, len(s.eps))}
	for _, ep := range s.eps {
		var es micro.EndpointStats
		if ep.Stats != nil {
			es = ep.Stats()
		} else {
			ep.mu.Lock()
			es = ep.timed
			ep.mu.Unlock()
		}
		es.Name, es.Subject = ep.Name, ep.Subject
		if es.NumRequests > 0 && es.AverageProcessingTime == 0 {
			es.AverageProcessingTime = es.ProcessingTime / time.Duration(es.NumRequests)
		}
		st.Endpoints = append(st.Endpoints, &es)
	}
	return st
}

// time wraps a synchronous handler with micro's own accounting.
func (ep *endpoint) time(h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		start := time.Now()
		h(m)
		d := time.Since(start)
		ep.mu.Lock()
		ep.timed.NumRequests++
		ep.timed.ProcessingTime += d
		ep.mu.Unlock()
	}
}

// Error answers m with micro's error headers (Nats-Service-Error-Code,
// Nats-Service-Error) beside hdr, as micro.Request.Error does.
func Error(m *nats.Msg, code, description string, data []byte, hdr nats.Header) error {
	if hdr == nil {
		hdr = nats.Header{}
	}
	hdr.Set(micro.ErrorCodeHeader, code)
	hdr.Set(micro.ErrorHeader, description)
	return m.RespondMsg(&nats.Msg{Header: hdr, Data: data})
}
