// Package protocol defines, once, every NATS subject, stream, bucket and message
// type that jetserve's services exchange, under a configurable prefix.
//
// Nothing in this package does I/O; it is pure data and naming. The JSON Schema
// documents under schemas/ describe the same types, and a test checks that the
// two agree.
package protocol

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// DefaultPrefix is the subject and bucket prefix when none is configured.
const DefaultPrefix = "jetserve"

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Names derives every subject, bucket and stream name from one prefix.
// The zero value is not usable; call NewNames.
type Names struct {
	prefix string
}

// NewNames validates prefix and returns the names under it.
func NewNames(prefix string) (Names, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixRE.MatchString(prefix) {
		return Names{}, fmt.Errorf("nats prefix %q: must match %s", prefix, prefixRE)
	}
	return Names{prefix: prefix}, nil
}

// Prefix returns the prefix the names were built from.
func (n Names) Prefix() string { return n.prefix }

// Token makes s safe to use as one subject token: '.', '*', '>' and
// white space are replaced by '_'.
func Token(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}

// Buckets (JetStream key-value) and their keys.

// BucketApps holds the desired state: key "config" is the whole ServeConfig
// as last applied (the declarative document), key "app.<name>" each app.
func (n Names) BucketApps() string { return n.prefix + "_apps" }

// BucketWorkers holds one WorkerInfo per live worker, key
// WorkerKey(<worker id>), refreshed by heartbeats and expired by the bucket
// TTL.
func (n Names) BucketWorkers() string { return n.prefix + "_workers" }

// BucketAssignments holds one Assignment per worker, key
// AssignmentKey(<worker id>), written only by the leading scheduler.
func (n Names) BucketAssignments() string { return n.prefix + "_assignments" }

// BucketReplicas holds one ReplicaInfo per replica, key ReplicaKey(…),
// written by the worker that runs it and expired by the bucket TTL when the
// worker stops refreshing it.
func (n Names) BucketReplicas() string { return n.prefix + "_replicas" }

// BucketStatus holds the status the leading scheduler computes, key "status".
func (n Names) BucketStatus() string { return n.prefix + "_status" }

// BucketLeases holds leader leases, keys "scheduler" and "autoscaler".
func (n Names) BucketLeases() string { return n.prefix + "_leases" }

// BucketScale holds the autoscaler's latest ScaleDecision per autoscaled
// deployment, key ScaleKey(app, deployment); written only by the leading
// autoscaler, read (watched) by the leading scheduler.
func (n Names) BucketScale() string { return n.prefix + "_scale" }

// BucketHandlers holds one HandlerInfo per deployment handler any worker
// registered, key HandlerKey(handler), put by workers when they start (no
// TTL): what a handler declares in code outlives its workers.
func (n Names) BucketHandlers() string { return n.prefix + "_handlers" }

// BucketBodies is the object store of request and response bodies too
// large for one NATS message (protocol.HeaderBodyObject), one object per
// body, deleted once read and expired by TTL otherwise.
func (n Names) BucketBodies() string { return n.prefix + "_bodies" }

// HandlerKey is the BucketHandlers key of a handler: its name when that is
// a valid key (letters, digits, '-', '_', '=', '/', '.' not at either
// end), else "=" and the name in unpadded base64url.
func HandlerKey(handler string) string {
	if handlerKeyRE.MatchString(handler) {
		return handler
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(handler))
}

var handlerKeyRE = regexp.MustCompile(`^[-/_=a-zA-Z0-9]([-/_=.a-zA-Z0-9]*[-/_=a-zA-Z0-9])?$`)

// ScaleKey is the BucketScale key of a deployment: "<app>.<deployment>".
func ScaleKey(app, deployment string) string { return Token(app) + "." + Token(deployment) }

// Keys of the per-worker records. Each holds the worker's id as a whole
// subject token, and has at least two tokens, so that NATS permissions can
// name one worker's keys ("$KV.<bucket>.<id>.registration") apart from the
// single-token keys of the job records, which workers write in buckets
// named per method ("$KV.*.*": see deploy/auth).

// WorkerKey is the BucketWorkers key of a worker: "<worker id>.registration".
func WorkerKey(workerID string) string { return Token(workerID) + "." + workerKeySuffix }

// AssignmentKey is the BucketAssignments key of a worker:
// "<worker id>.assignment".
func AssignmentKey(workerID string) string { return Token(workerID) + "." + assignmentKeySuffix }

const (
	workerKeySuffix     = "registration"
	assignmentKeySuffix = "assignment"
)

// WorkerOfKey returns the worker id of a WorkerKey; false for any other
// key.
func WorkerOfKey(key string) (string, bool) { return workerOf(key, workerKeySuffix) }

// WorkerOfAssignmentKey returns the worker id of an AssignmentKey; false
// for any other key.
func WorkerOfAssignmentKey(key string) (string, bool) { return workerOf(key, assignmentKeySuffix) }

func workerOf(key, suffix string) (string, bool) {
	id, ok := strings.CutSuffix(key, "."+suffix)
	if !ok || id == "" || strings.ContainsAny(id, ".*> \t\r\n") {
		return "", false
	}
	return id, true
}

// ReplicaKey is the BucketReplicas key of a replica:
// "<app>.<deployment>.<worker id>.<replica id>". The worker's token lets
// NATS permissions allow a worker its own replicas' records only
// ("$KV.<bucket>.*.*.<worker id>.*").
func ReplicaKey(app, deployment, workerID, replicaID string) string {
	return Token(app) + "." + Token(deployment) + "." + Token(workerID) + "." + Token(replicaID)
}

// SplitReplicaKey returns the tokens of a ReplicaKey; false if key has not
// four tokens.
func SplitReplicaKey(key string) (app, deployment, workerID, replicaID string, ok bool) {
	t := strings.Split(key, ".")
	if len(t) != 4 || slices.Contains(t, "") {
		return "", "", "", "", false
	}
	return t[0], t[1], t[2], t[3], true
}

// ValidWorkerID reports an id that cannot name a worker: a worker id is one
// subject token of letters, digits, '-' and '_' (at most 64), the name of
// its NATS user when workers have one each.
func ValidWorkerID(id string) error {
	if !workerIDRE.MatchString(id) {
		return fmt.Errorf("worker id %q: want 1 to 64 letters, digits, '-' or '_'", id)
	}
	return nil
}

var workerIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Subjects.

// RouteSubject is where callers (ingress, handles) send a sync request for a
// deployment; routers listen on it in queue group RouterQueue.
func (n Names) RouteSubject(app, deployment string) string {
	return n.prefix + ".route." + Token(app) + "." + Token(deployment)
}

// RouteWildcard matches every RouteSubject.
func (n Names) RouteWildcard() string { return n.prefix + ".route.*.*" }

// RouterQueue is the queue group of all routers.
const RouterQueue = "router"

// ReplicaSubject is the subject prefix of one replica's micro service
// endpoints: ReplicaSubject(id)+".call" and ReplicaSubject(id)+".health".
func (n Names) ReplicaSubject(replicaID string) string {
	return n.prefix + ".replica." + Token(replicaID)
}

// LoadSubject carries LoadReport messages of one deployment's replicas.
func (n Names) LoadSubject(app, deployment string) string {
	return n.prefix + ".load." + Token(app) + "." + Token(deployment)
}

// LoadWildcard matches every LoadSubject.
func (n Names) LoadWildcard() string { return n.prefix + ".load.*.*" }

// RouteLoadSubject carries the short LoadReports (no request totals) that
// one deployment's replicas send on every change of their load, for the
// routers; LoadSubject has the full ones, at a few per second.
func (n Names) RouteLoadSubject(app, deployment string) string {
	return n.LoadSubject(app, deployment) + ".route"
}

// RouteLoadWildcard matches every RouteLoadSubject.
func (n Names) RouteLoadWildcard() string { return n.prefix + ".load.*.*.route" }

// RouterStatsSubject carries RouterStats messages (queued requests per
// deployment at one router).
func (n Names) RouterStatsSubject() string { return n.prefix + ".routerstats" }

// GraphStatsSubject carries GraphStats messages (the choices of the
// graphs' splitters at one ingress).
func (n Names) GraphStatsSubject() string { return n.prefix + ".graphstats" }

// DeploymentService is the NATS micro service name of a deployment,
// "<prefix>-<app>-<deployment>": each of its replicas is an instance of it
// (`nats micro ls` lists one service per deployment, `nats micro stats
// <name>` its replicas; metadata app and deployment name them exactly).
func (n Names) DeploymentService(app, deployment string) string {
	return n.prefix + "-" + app + "-" + deployment
}

// Endpoint names of a replica's micro service.
const (
	EndpointCall   = "call"
	EndpointHealth = "health"
)
