// Package autoscaler is the service that will turn live load (ongoing and
// queued requests, JetStream consumer lag) into desired replica counts.
// For now it starts, connects to NATS, opens the shared buckets, serves
// /metrics and /healthz, and observes the load reports and router stats it
// will scale on, exporting what it sees as metrics. It makes no decision
// yet: scaling decisions belong to the autoscaling issue.
//
// Run owns every goroutine it starts and returns after they end.
package autoscaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// Config is the autoscaler's configuration.
type Config struct {
	service.Common `koanf:",squash"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Common: service.DefaultCommon(":9104")}
}

// Validate checks the configuration.
func (c Config) Validate() error { return c.Common.Validate() }

// CommonConfig returns the shared part.
func (c Config) CommonConfig() service.Common { return c.Common }

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config, deps service.Deps) error {
	cleanup, err := deps.Prepare(ctx, cfg.Common, "autoscaler")
	if err != nil {
		return err
	}
	defer cleanup()
	names, err := protocol.NewNames(cfg.NATS.Prefix)
	if err != nil {
		return err
	}
	js, err := jetstream.New(deps.NC)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := service.OpenBuckets(ctx, js, names); err != nil {
		return err
	}
	o := newObserver(deps.Metrics)
	sub, err := deps.NC.Subscribe(names.LoadWildcard(), o.onLoad)
	if err != nil {
		return fmt.Errorf("subscribe load reports: %w", err)
	}
	rsub, err := deps.NC.Subscribe(names.RouterStatsSubject(), o.onRouterStats)
	if err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("subscribe router stats: %w", err)
	}
	deps.Log.Info().Msg("autoscaler observing load (no scaling decisions yet)")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return deps.ServeOps(gctx, cfg.OpsAddr) })
	err = g.Wait()
	_ = sub.Unsubscribe()
	_ = rsub.Unsubscribe()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// observer keeps the latest load per replica and queue per router.
type observer struct {
	ongoing *prometheus.GaugeVec
	queued  *prometheus.GaugeVec
	mu      sync.Mutex
	// perRouter is guarded by mu: router id → deployment key → queued.
	perRouter map[string]map[string]int
}

func newObserver(reg prometheus.Registerer) *observer {
	o := &observer{
		ongoing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetserve_autoscaler_observed_ongoing_requests",
			Help: "Ongoing requests per replica as last reported to the autoscaler."}, []string{"app", "deployment", "replica"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetserve_autoscaler_observed_queued_requests",
			Help: "Requests queued at routers per deployment as last reported to the autoscaler."}, []string{"deployment"}),
		perRouter: map[string]map[string]int{},
	}
	reg.MustRegister(o.ongoing, o.queued)
	return o
}

func (o *observer) onLoad(m *nats.Msg) {
	var r protocol.LoadReport
	if json.Unmarshal(m.Data, &r) != nil {
		return
	}
	o.ongoing.WithLabelValues(r.App, r.Deployment, r.ReplicaID).Set(float64(r.Ongoing))
}

func (o *observer) onRouterStats(m *nats.Msg) {
	var s protocol.RouterStats
	if json.Unmarshal(m.Data, &s) != nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.perRouter[s.RouterID] = s.Queued
	total := map[string]int{}
	for _, q := range o.perRouter {
		for k, n := range q {
			total[k] += n
		}
	}
	for k, n := range total {
		o.queued.WithLabelValues(k).Set(float64(n))
	}
}
