package reconcile

import (
	"context"
	"time"

	"github.com/jetserve/jetserve/services/scheduler/internal/plan"
)

// Workflow runs pinned to a deployment version (plan.Input.Pinned). While
// a deployment has replicas of an earlier version, the leader counts its
// application's pinned runs (jobs.Queue.PinnedRuns) in a goroutine, at
// most every PinScanEvery, and keeps the counts by deployment; a
// deployment whose replicas are all of its current version forgets them,
// so that the next rolling update keeps the old version until it is
// counted afresh. A run pinned to a version of which no replica is left
// (its kept replica was drained to make room for a rollout, or given up
// when, lost, it could be placed on no other worker) is unpinned — by a
// runner of its workflow, which the count asks (jobs.Queue.RequestUnpin)
// —: it then runs on the current version. So an application is counted
// again after its last replica of an earlier version went, and while its
// last count asked for unpins; a new leader counts every application once.

// PinScanEvery is how often pinned runs are counted while a deployment
// has replicas of an earlier version.
const PinScanEvery = 5 * time.Second

// pinResult is one count of pinned runs.
type pinResult struct {
	counts map[string]map[string]int // by plan.Key, version
	keys   []string                  // the deployments counted
	apps   []string                  // the applications counted
	asked  map[string]bool           // applications with runs asked to unpin
	err    error
}

// pinScan is what a count looks at: the applications with replicas of an
// earlier version, their deployments, and the versions with replicas.
type pinScan struct {
	apps map[string][]string        // app → deployment keys
	live map[string]map[string]bool // plan.Key → versions that have a replica (or are current)
}

// pinsToCount returns the scan the state calls for: nil when no
// deployment has a replica of an earlier version and no application is
// to be counted again (leader.pinAgain). Counts of the other deployments
// are forgotten.
func (l *leader) pinsToCount() *pinScan {
	if l.pinAgain == nil {
		l.pinAgain = map[string]bool{}
	}
	current := map[string]string{}
	for _, a := range l.cfg.Applications {
		for _, d := range a.Deployments {
			current[plan.Key(a.Name, d.Name)] = plan.Version(d)
		}
	}
	sc := &pinScan{apps: map[string][]string{}, live: map[string]map[string]bool{}}
	for k, v := range current {
		sc.live[k] = map[string]bool{v: true}
	}
	stale := map[string]bool{} // apps with an old replica
	for _, r := range l.st.Replicas {
		k := plan.Key(r.Spec.App, r.Spec.Deployment)
		if sc.live[k] == nil {
			continue // a deleted deployment: it goes whole
		}
		sc.live[k][r.Spec.Version] = true
		if r.Spec.Version != current[k] {
			stale[r.Spec.App] = true
		}
	}
	for _, a := range l.cfg.Applications {
		if l.pinAll || (l.pinStale[a.Name] && !stale[a.Name]) {
			l.pinAgain[a.Name] = true // its runs may be pinned to a version with no replica now
		}
		for _, d := range a.Deployments {
			k := plan.Key(a.Name, d.Name)
			if stale[a.Name] || l.pinAgain[a.Name] {
				sc.apps[a.Name] = append(sc.apps[a.Name], k)
			} else {
				delete(l.pinned, k)
			}
		}
	}
	for app := range l.pinAgain {
		if _, ok := l.cfg.App(app); !ok {
			delete(l.pinAgain, app)
		}
	}
	l.pinStale, l.pinAll = stale, false
	if len(sc.apps) == 0 {
		return nil
	}
	return sc
}

// startPinCount counts pinned runs in the background when the state
// calls for it and no count runs, at most every PinScanEvery (at once for
// a deployment not counted yet).
func (l *leader) startPinCount(ctx context.Context, now time.Time) {
	if l.o.Jobs == nil || l.pinCounting {
		return
	}
	sc := l.pinsToCount()
	if sc == nil {
		return
	}
	fresh := false
	for _, keys := range sc.apps {
		for _, k := range keys {
			if _, ok := l.pinned[k]; !ok {
				fresh = true
			}
		}
	}
	if !fresh && now.Sub(l.pinCountAt) < PinScanEvery {
		return
	}
	l.pinCounting, l.pinCountAt = true, now
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		res := l.countPins(ctx, sc, now)
		select {
		case l.pinResults <- res:
		case <-ctx.Done():
		}
	}()
}

// countPins counts the pinned runs of sc's applications and unpins those
// whose version has no replica left.
func (l *leader) countPins(ctx context.Context, sc *pinScan, now time.Time) pinResult {
	res := pinResult{counts: map[string]map[string]int{}, asked: map[string]bool{}}
	for app, keys := range sc.apps {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		runs, err := l.o.Jobs.PinnedRuns(cctx, app, now)
		cancel()
		if err != nil {
			res.err = err
			continue
		}
		res.keys, res.apps = append(res.keys, keys...), append(res.apps, app)
		for _, run := range runs {
			k := plan.Key(app, run.Deployment)
			if live, ok := sc.live[k]; ok && !live[run.Version] {
				// A runner of the workflow writes the record; the next
				// count asks again if it is still pinned.
				res.asked[app] = true
				if err := l.o.Jobs.RequestUnpin(app, run); err != nil {
					l.log.Warn().Err(err).Str("app", app).Str("method", run.Method).Str("request_id", run.ID).
						Msg("ask to unpin a workflow run whose version has no replica left")
				}
				continue
			}
			if res.counts[k] == nil {
				res.counts[k] = map[string]int{}
			}
			res.counts[k][run.Version]++
		}
	}
	return res
}

// pinCounted takes a count's result.
func (l *leader) pinCounted(res pinResult) {
	l.pinCounting = false
	if res.err != nil {
		l.log.Warn().Err(res.err).Msg("count workflow runs pinned to a version (the old versions' replicas stay until counted)")
	}
	for _, k := range res.keys {
		l.pinned[k] = res.counts[k]
		if l.pinned[k] == nil {
			l.pinned[k] = map[string]int{}
		}
	}
	for _, app := range res.apps {
		if !res.asked[app] {
			delete(l.pinAgain, app) // no run waits for an unpin
		}
	}
}
