package main

import (
	"encoding/json"
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

func TestStatusShowsJobsAndAutoscaling(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	st := protocol.Status{Leader: "s1", UpdatedAt: now, Applications: map[string]protocol.AppStatus{"a": {Name: "a",
		Deployments: map[string]protocol.DeploymentStatus{
			"auto": {Name: "auto", TargetReplicas: 3, CurrentReplicas: 2, DesiredReplicas: 3,
				Autoscaling: &protocol.AutoscalingStatus{MinReplicas: 0, MaxReplicas: 8, TargetOngoingRequests: 2, Load: 5.5,
					LastReason: protocol.ScaleUp, LastMessage: "load 5.50 over target 2", LastDecisionAt: now.Add(-3 * time.Second)}},
			"fixed": {Name: "fixed", TargetReplicas: 1, CurrentReplicas: 1, DesiredReplicas: 1},
		}}}}
	var dash dashboardDoc
	if err := json.Unmarshal([]byte(`{"applications":[{"name":"a","deployments":[{"name":"auto","traffic":{"rps":41.5,"p95_ms":12.25,"ongoing":4,"queued":2}}]}],
		"jobs":[{"app":"a","deployment":"auto","method":"train","queued":7,"running":2,"succeeded":30,"failed":1,"dead_lettered":1,"oldest_age_seconds":95},
		{"app":"a","deployment":"auto","method":"trip","workflow":true,"running":1,"suspended":12,"succeeded":5}]}`), &dash); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	writeOpsTables(&b, st, &dash)
	out := b.String()
	for _, want := range []string{
		"JOBS", "DEAD-LETTERED", "SUSPENDED", "a/train", "auto", "7  ", "1m35s", "a/trip (workflow)", "12 ",
		"AUTOSCALING", "a/auto", "2/3/3", "0..8", "5.50", "upscale 3s ago", "load 5.50 over target 2", "41.5 req/s, p95 12.2 ms, 4 ongoing, 2 queued",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("writeOpsTables() =\n%s\nwant it to contain %q", out, want)
		}
	}
	if strings.Contains(out, "a/fixed") {
		t.Errorf("writeOpsTables() =\n%s\nlists a deployment that is not autoscaled", out)
	}
	// Without the dashboard document: no jobs section, autoscaling from the status.
	b.Reset()
	writeOpsTables(&b, st, nil)
	if out := b.String(); strings.Contains(out, "JOBS") || !strings.Contains(out, "upscale 3s ago") {
		t.Errorf("writeOpsTables(no dashboard) =\n%s\nwant the autoscaling section only", out)
	}
}

func TestStatusTableShowsTheLiveSplit(t *testing.T) {
	st := protocol.Status{Leader: "s1", Applications: map[string]protocol.AppStatus{"canary": {Name: "canary", RoutePrefix: "/c",
		Status: protocol.AppRunning, Deployments: map[string]protocol.DeploymentStatus{},
		Graph: &protocol.GraphStatus{Splitters: []protocol.SplitterStatus{{Node: "root", WindowSeconds: 60, Requests: 1000,
			Branches: []protocol.BranchStatus{{Step: "v1", Target: "ModelV1", Weight: 95, Requests: 948, Share: 94.8},
				{Step: "v2", Target: "ModelV2", Weight: 5, Requests: 52, Share: 5.2}}}}}}}}
	var b strings.Builder
	writeStatusTable(&b, st)
	out := b.String()
	for _, want := range []string{"SPLIT", "LIVE SHARE", "canary/root", "ModelV1", "95%", "94.8%", "948 in 60s", "ModelV2", "5.2%"} {
		if !strings.Contains(out, want) {
			t.Errorf("writeStatusTable() =\n%s\nwant it to contain %q", out, want)
		}
	}
}
