package main

import (
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

func TestStatusTableShowsScaling(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	st := protocol.Status{Leader: "s1", UpdatedAt: now, Applications: map[string]protocol.AppStatus{"a": {Name: "a", RoutePrefix: "/a",
		Status: protocol.AppDeploying, Deployments: map[string]protocol.DeploymentStatus{
			"auto": {Name: "auto", Status: protocol.DeploymentUpscaling, TargetReplicas: 4, CurrentReplicas: 2, DesiredReplicas: 5,
				Autoscaling: &protocol.AutoscalingStatus{MaxReplicas: 4, LastReason: protocol.ScaleUp, LastDecisionAt: now.Add(-12 * time.Second)}},
			"fixed": {Name: "fixed", Status: protocol.DeploymentHealthy, TargetReplicas: 1, CurrentReplicas: 1, DesiredReplicas: 1},
		}}}}
	var b strings.Builder
	writeStatusTable(&b, st)
	out := b.String()
	for _, want := range []string{"CUR/DES/TGT", "LAST SCALING", "UPSCALING", "2/5/4", "upscale 12s ago", "1/1/1"} {
		if !strings.Contains(out, want) {
			t.Errorf("writeStatusTable() =\n%s\nwant it to contain %q", out, want)
		}
	}
}

func TestStatusTableShowsProcessRestarts(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	st := protocol.Status{Leader: "s1", UpdatedAt: now, Applications: map[string]protocol.AppStatus{"d": {Name: "d", RoutePrefix: "/d",
		Status: protocol.AppRunning, Deployments: map[string]protocol.DeploymentStatus{
			"model": {Name: "model", Status: protocol.DeploymentHealthy, TargetReplicas: 2, CurrentReplicas: 2, DesiredReplicas: 2,
				Replicas: []protocol.ReplicaStatus{
					{ID: "r1", State: protocol.ReplicaRunning, Process: &protocol.ProcessStatus{Port: 1, Restarts: 2, LastExit: "exit status 1", LastExitAt: now.Add(-time.Minute)}},
					{ID: "r2", State: protocol.ReplicaRunning, Process: &protocol.ProcessStatus{Port: 2, Restarts: 1, LastExit: "signal: killed", LastExitAt: now}},
				}},
			"go": {Name: "go", Status: protocol.DeploymentHealthy, TargetReplicas: 1, CurrentReplicas: 1, DesiredReplicas: 1,
				Replicas: []protocol.ReplicaStatus{{ID: "g1", State: protocol.ReplicaRunning}}},
		}}}}
	var b strings.Builder
	writeStatusTable(&b, st)
	out := b.String()
	if want := "[process restarts: 3, last exit: signal: killed]"; !strings.Contains(out, want) {
		t.Errorf("writeStatusTable() =\n%s\nwant it to contain %q", out, want)
	}
	if strings.Count(out, "process restarts") != 1 {
		t.Errorf("writeStatusTable() =\n%s\nwant process restarts only for the process deployment", out)
	}
}
