package plan

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// BuildStatus summarises a pass: every desired application with its
// deployments and replicas, applications being deleted (while their
// replicas still report), and the live workers with what is used on them.
// It records in st which deployments reached their target.
func BuildStatus(st *State, in Input, res Result, leader string, deployedAt map[string]time.Time) protocol.Status {
	s := protocol.Status{Leader: leader, Applications: map[string]protocol.AppStatus{}, Workers: []protocol.WorkerStatus{}, UpdatedAt: in.Now}
	byKey := map[string][]*Replica{}
	for _, r := range sortedReplicas(st.Replicas) {
		k := Key(r.Spec.App, r.Spec.Deployment)
		byKey[k] = append(byKey[k], r)
	}
	// Records of replicas no longer wanted: they are draining.
	stopping := map[string][]protocol.ReplicaInfo{}
	for _, rec := range sortedRecords(in.Records) {
		if _, ok := st.Replicas[rec.ID]; !ok {
			k := Key(rec.App, rec.Deployment)
			stopping[k] = append(stopping[k], rec)
		}
	}
	stoppingStatus := func(rec protocol.ReplicaInfo) protocol.ReplicaStatus {
		rs := protocol.ReplicaStatus{ID: rec.ID, State: protocol.ReplicaStopping, WorkerID: rec.WorkerID,
			Version: rec.Version, Message: "removed; draining", StartedAt: rec.StartedAt}
		if why, ok := st.Removed[rec.ID]; ok {
			rs.Message, rs.Reason = "removed ("+why.String()+"); draining", &why
		}
		return rs
	}

	desired := map[string]bool{}
	for _, app := range in.Config.Applications {
		desired[app.Name] = true
		as := protocol.AppStatus{Name: app.Name, RoutePrefix: app.RoutePrefix, Ingress: app.Ingress,
			Deployments: map[string]protocol.DeploymentStatus{}, DeployedAt: deployedAt[app.Name]}
		var failed, unhealthy, notReady []string
		for _, d := range app.Deployments {
			k := Key(app.Name, d.Name)
			ver := Version(d)
			target := in.Target(app.Name, d)
			if prev, ok := st.Targets[k]; ok && prev != target {
				if target > prev {
					st.Scaling[k] = protocol.DeploymentUpscaling
				} else {
					st.Scaling[k] = protocol.DeploymentDownscaling
				}
			}
			st.Targets[k] = target
			ds := protocol.DeploymentStatus{Name: d.Name, TargetReplicas: target, Version: ver, Replicas: []protocol.ReplicaStatus{}}
			var cur, old, kept, running, reconfiguring int
			var moves []string
			pending := map[string]protocol.Reason{} // by message
			for _, r := range byKey[k] {
				rs := protocol.ReplicaStatus{ID: r.Spec.ID, WorkerID: r.WorkerID, Version: r.Spec.Version}
				rec, ok := in.Records[r.Spec.ID]
				switch {
				case r.WorkerID == "":
					rs.State = protocol.ReplicaPending
					if why := r.Reason; !why.IsZero() {
						rs.Message, rs.Reason = why.String(), &why
						pending[rs.Message] = why
					}
				case ok && rec.WorkerID == r.WorkerID:
					rs.State, rs.Message, rs.StartedAt, rs.Process = rec.State, rec.Message, rec.StartedAt, rec.Process
					if rec.State == protocol.ReplicaRunning && rec.ConfigVersion != "" && rec.ConfigVersion != r.Spec.ConfigVersion() {
						rs.Message = "applying the new config in place"
						if r.Spec.Version == ver {
							reconfiguring++
						}
					}
				default:
					rs.State, rs.Message = protocol.ReplicaStarting, "assigned to worker "+r.WorkerID+"; waiting for it to start"
				}
				if r.Spec.PinnedOnly && r.Spec.Version != ver {
					rs.PinnedOnly = true
					if rs.Message == "" {
						rs.Message = "kept for the workflow runs pinned to its version; takes no requests"
					}
				}
				ds.Replicas = append(ds.Replicas, rs)
				if r.Moves != "" {
					moves = append(moves, fmt.Sprintf("starting %s on worker %s to replace %s", r.Spec.ID, r.WorkerID, r.Moves))
					continue
				}
				switch {
				case r.Spec.Version == ver:
					cur++
					if in.Running(r) {
						running++
					}
				case r.Spec.PinnedOnly:
					kept++ // not an update in progress: the deployment is at its version
				default:
					old++
				}
			}
			for _, rec := range stopping[k] {
				ds.Replicas = append(ds.Replicas, stoppingStatus(rec))
			}
			ds.CurrentReplicas, ds.DesiredReplicas = running, in.Desired(app.Name, d)
			if ac := d.AutoscalingConfig; ac != nil {
				as := &protocol.AutoscalingStatus{MaxReplicas: ac.MaxReplicas, TargetOngoingRequests: ac.TargetOngoingRequests}
				if ac.MinReplicas != nil {
					as.MinReplicas = *ac.MinReplicas
				}
				if dec, ok := in.Scale[k]; ok {
					as.Load, as.LastReason, as.LastMessage, as.LastDecisionAt = dec.Load, dec.Reason, dec.Message, dec.At
				}
				ds.Autoscaling = as
			}
			msg := fmt.Sprintf("%d/%d replicas running", running, target)
			if len(pending) > 0 {
				msgs := slices.Sorted(maps.Keys(pending))
				for _, m := range msgs {
					ds.Pending = append(ds.Pending, pending[m])
				}
				msg += "; pending: " + strings.Join(msgs, "; ")
			}
			fails := st.Failures[k]
			if fails.Version != ver {
				fails = StartFailures{}
			}
			if fails.Count > 0 {
				msg += fmt.Sprintf("; %d replica start(s) failed in a row, the last: %s", fails.Count, fails.Reason)
			}
			ro, rolling := st.Rollouts[k]
			switch {
			case running == 0 && target > 0 && fails.Count >= DeployFailedAfter(target):
				ds.Status = protocol.DeploymentDeployFailed
				ds.Message = fmt.Sprintf("replicas failed to start %d times in a row; retrying with backoff (up to %s): %s",
					fails.Count, MaxStartBackoff, fails.Reason)
			case old > 0 || rolling:
				ds.Status = protocol.DeploymentUpdating
				if ro.Strategy == "" {
					ro.Strategy = protocol.RolloutSurge
				}
				ds.Rollout = &protocol.RolloutStatus{Strategy: ro.Strategy, Reason: ro.Reason,
					MaxUnavailable: d.MaxUnavailable.Of(target), OldReplicas: old}
				how := "surge: new replicas start beside the old ones"
				if ro.Strategy == protocol.RolloutReplace {
					how = fmt.Sprintf("replace one at a time, at most %d below target: %s for a surge replica", ds.Rollout.MaxUnavailable, ro.Reason)
				}
				ds.Message = fmt.Sprintf("rolling update to version %s (%s): %s", ver, how, msg)
			case running >= target && cur == target:
				ds.Status = protocol.DeploymentHealthy
				st.Healthy[k] = ver
				if st.Scaling[k] == protocol.DeploymentDownscaling && len(stopping[k]) > 0 {
					ds.Status = protocol.DeploymentDownscaling
					ds.Message = fmt.Sprintf("stopping %d replicas", len(stopping[k]))
				} else {
					delete(st.Scaling, k)
				}
			case st.Scaling[k] == protocol.DeploymentUpscaling:
				ds.Status, ds.Message = protocol.DeploymentUpscaling, msg
			case st.Healthy[k] == ver:
				ds.Status, ds.Message = protocol.DeploymentUnhealthy, msg
			default:
				ds.Status, ds.Message = protocol.DeploymentUpdating, msg
			}
			if reconfiguring > 0 && ds.Status == protocol.DeploymentHealthy {
				ds.Status = protocol.DeploymentUpdating
				ds.Message = fmt.Sprintf("reconfiguring in place (user_config, max_ongoing_requests, graceful_shutdown_timeout or async_methods changed): %d/%d replicas applied it",
					cur-reconfiguring, cur)
			}
			if kept > 0 {
				ds.Message = strings.TrimPrefix(fmt.Sprintf("%s; %d replica(s) of an earlier version kept for the workflow runs pinned to it",
					ds.Message, kept), "; ")
			}
			if u, ok := st.Unpinned[k]; ok && u.Current == ver {
				ds.Message = strings.TrimPrefix(fmt.Sprintf("%s; the replica %s (at %s)",
					ds.Message, u.Reason, u.At.UTC().Format(time.RFC3339)), "; ")
			}
			if len(moves) > 0 {
				ds.Message = strings.TrimPrefix(ds.Message+"; rebalancing: "+strings.Join(moves, "; "), "; ")
			}
			switch ds.Status {
			case protocol.DeploymentDeployFailed:
				failed = append(failed, d.Name+": "+ds.Message)
			case protocol.DeploymentUnhealthy:
				unhealthy = append(unhealthy, d.Name+": "+ds.Message)
			case protocol.DeploymentHealthy:
			default:
				notReady = append(notReady, d.Name+": "+ds.Message)
			}
			as.Deployments[d.Name] = ds
		}
		switch {
		case len(failed) > 0:
			as.Status, as.Message = protocol.AppDeployFailed, strings.Join(append(append(failed, unhealthy...), notReady...), "; ")
		case len(unhealthy) > 0:
			as.Status, as.Message = protocol.AppUnhealthy, strings.Join(append(unhealthy, notReady...), "; ")
		case len(notReady) > 0:
			as.Status, as.Message = protocol.AppDeploying, strings.Join(notReady, "; ")
		default:
			as.Status = protocol.AppRunning
		}
		s.Applications[app.Name] = as
	}
	// Deleted applications stay DELETING while replicas still report.
	for k, recs := range stopping {
		app, dep, _ := strings.Cut(k, "/")
		if desired[app] {
			continue
		}
		as, ok := s.Applications[app]
		if !ok {
			as = protocol.AppStatus{Name: app, Status: protocol.AppDeleting, Message: "deleting: waiting for replicas to stop",
				Deployments: map[string]protocol.DeploymentStatus{}}
		}
		ds := protocol.DeploymentStatus{Name: dep, Status: protocol.DeploymentDownscaling, Message: "deleting"}
		for _, rec := range recs {
			ds.Replicas = append(ds.Replicas, stoppingStatus(rec))
		}
		as.Deployments[dep] = ds
		s.Applications[app] = as
	}
	for k := range st.Targets {
		app, _, _ := strings.Cut(k, "/")
		if !desired[app] {
			delete(st.Targets, k)
			delete(st.Healthy, k)
			delete(st.Scaling, k)
			delete(st.Failures, k)
		}
	}

	ids := slices.Sorted(maps.Keys(in.Workers))
	for _, id := range ids {
		w := in.Workers[id]
		var u Usage
		if res.Cluster != nil {
			u = res.Cluster.Usage(id)
		}
		s.Workers = append(s.Workers, protocol.WorkerStatus{ID: id, Host: w.Host, CPU: w.CPU, CPUUsed: u.CPU,
			Memory: w.MemoryBytes, MemUsed: u.Memory, GPUs: w.GPUs, GPUUsed: u.GPU, Labels: w.Labels,
			Replicas: u.Replicas, Heartbeat: w.Heartbeat})
	}
	return s
}

func sortedRecords(m map[string]protocol.ReplicaInfo) []protocol.ReplicaInfo {
	out := make([]protocol.ReplicaInfo, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
