// Package auth generates jetserve's NATS accounts and credentials with the
// libraries under nsc (github.com/nats-io/jwt/v2, github.com/nats-io/nkeys):
// decentralised JWT auth with an operator, a system account and one
// account, JETSERVE, whose users are the services, each allowed only the
// subjects it needs (Permissions), derived from protocol.Names and
// jobs.Names.
//
// Why JWT rather than users in the server config: a user's permissions
// travel in its signed JWT, so a credential is issued, rotated or given to
// a new worker by signing a user with the account key — no server
// restart, no server config to edit; revoking one is an account update
// (`nats-server --signal reload` with the memory resolver).
package auth

import (
	"fmt"
	"slices"

	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/jwt/v2"
)

// Roles, one NATS user each (workers: one per worker id, or the pool user
// "worker" for a scalable pool).
const (
	Ingress    = "ingress"
	Router     = "router"
	Scheduler  = "scheduler"
	Autoscaler = "autoscaler"
	Worker     = "worker"
	// Deployment is the connection a worker hands to deployment code
	// (serve.Init.NC): handle calls, nothing else.
	Deployment = "deployment"
	// Operator is the human operator's CLI (jetserve jobs requeue, the
	// nats CLI): every subject of the account.
	Operator = "operator"
)

// Services are the roles of the five services.
var Services = []string{Ingress, Router, Scheduler, Autoscaler, Worker}

// InboxPrefix is the inbox prefix of a role's user: its replies arrive
// below it, and it may subscribe to nothing else of the kind, so one
// service cannot read another's replies. service.Connect reads it from the
// user JWT's permissions.
func InboxPrefix(user string) string { return "_INBOX." + protocol.Token(user) }

type perm struct {
	pub, sub, pubDeny, subDeny []string
}

func (p *perm) allowPub(s ...string) { p.pub = append(p.pub, s...) }

// pubDenyExcept drops s from the publish denials.
func (p *perm) pubDenyExcept(s string) {
	p.pubDeny = slices.DeleteFunc(p.pubDeny, func(d string) bool { return d == s })
}
func (p *perm) allowSub(s ...string) { p.sub = append(p.sub, s...) }

// Permissions returns the permissions of role's user under names. Role
// Worker is the shared pool user, which any worker id may use (see
// WorkerPermissions for one worker's own).
func Permissions(names protocol.Names, role string) (jwt.Permissions, error) {
	return permissions(names, role, "*")
}

// WorkerPermissions returns the permissions of the user of the one worker
// id: it reads only its own assignment and writes only its own
// registration and replica records (protocol.WorkerKey, AssignmentKey,
// ReplicaKey hold the id as a subject token).
//
// NATS lets a deny win over any allow, so one worker's keys cannot be
// carved out of a wildcard by denials; they are carved by the keys'
// shapes instead. A worker writes job records, whose buckets are named per
// method: those keys are one token ("$KV.*.*"), and the fleet's buckets
// deny one-token keys, while a worker's own keys have two or more tokens
// and are allowed by name. Reads likewise: the subject forms of a direct
// get or a consumer on the assignments (the filter in the API subject) are
// allowed for the own key only, and the forms whose filter is in the
// request body (a direct get's last_by_subj, STREAM.MSG.GET, a consumer
// without a filter in its subject) are denied on the assignments' stream.
func WorkerPermissions(names protocol.Names, workerID string) (jwt.Permissions, error) {
	if err := CheckWorkerID(workerID); err != nil {
		return jwt.Permissions{}, err
	}
	return permissions(names, Worker, workerID)
}

// CheckWorkerID reports an id that cannot name a worker's user: not a
// valid worker id, or the name of a role (whose user it would pose as to
// readers that check who wrote a document).
func CheckWorkerID(id string) error {
	if err := protocol.ValidWorkerID(id); err != nil {
		return err
	}
	if slices.Contains(append(append([]string(nil), Services...), Deployment, Operator, "sys"), id) {
		return fmt.Errorf("worker id %q: the name of a role's user", id)
	}
	return nil
}

// permissions builds role's permissions; workerID is the worker's own id
// for role Worker, "*" for the shared pool user.
func permissions(names protocol.Names, role, workerID string) (jwt.Permissions, error) {
	P := names.Prefix()
	// Wildcards are written out: Names' builders make "*" a literal token.
	jobsAll := P + ".jobs.*.*.*"                              // jobs.Names.JobSubject of every job
	wfInboxes := P + ".wf.*.*.*.in"                           // jobs.Names.WorkflowSubject(..., "in") of every run
	replicaCalls := P + ".replica.*." + protocol.EndpointCall // names.ReplicaSubject(id) + ".call"
	kvStream := func(bucket string) string { return "KV_" + bucket }
	fleet := []string{names.BucketApps(), names.BucketWorkers(), names.BucketAssignments(), names.BucketReplicas(),
		names.BucketStatus(), names.BucketLeases(), names.BucketScale(), names.BucketHandlers()}
	// kvWrite allows puts/deletes of keys in bucket ("*"-style key
	// patterns allowed: ">" for all).
	kvWrite := func(p *perm, bucket, key string) { p.allowPub("$KV." + bucket + "." + key) }
	// kvRead allows gets and watches of bucket (all keys).
	kvRead := func(p *perm, bucket string) {
		s := kvStream(bucket)
		p.allowPub("$JS.API.STREAM.INFO."+s, "$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>",
			"$JS.API.STREAM.MSG.GET."+s, "$JS.API.CONSUMER.CREATE."+s, "$JS.API.CONSUMER.CREATE."+s+".>",
			"$JS.API.CONSUMER.DELETE."+s+".*", "$JS.API.CONSUMER.INFO."+s+".*",
			// kvfollow's watches pull (their consumers' heartbeats
			// tell a lost consumer in a second).
			"$JS.API.CONSUMER.MSG.NEXT."+s+".*")
	}
	// bindFleet: a service looks the fleet buckets up at start.
	bindFleet := func(p *perm) {
		p.allowPub("$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST")
	}
	// ensureFleet: the scheduler creates or adopts them; the other
	// services only bind (service.Deps.Bind), waiting for it.
	ensureFleet := func(p *perm) {
		bindFleet(p)
		for _, b := range fleet {
			p.allowPub("$JS.API.STREAM.CREATE."+kvStream(b), "$JS.API.STREAM.UPDATE."+kvStream(b))
		}
	}
	// jobStreams: the async methods' streams, record buckets and object
	// stores are named per method (P_JOBS_<app>_<method>,
	// P_jobs_<app>_<method>, P_jobobj_<app>_<method>): NATS permissions
	// match whole tokens, so these are "*" — with the fleet's buckets
	// denied where that matters.
	// They are created by the scheduler (package provision): the users
	// that use them may not create, update, purge or delete streams, nor
	// delete messages — NATS checks no permission on a stream's sources or
	// republish, so creating or updating a stream would read any subject.
	jobStreamsRW := func(p *perm, owned ...string) {
		p.allowPub("$JS.API.STREAM.INFO.*",
			"$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.*",
			"$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>", "$JS.API.CONSUMER.INFO.>",
			"$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.MSG.NEXT.>", "$JS.API.CONSUMER.LIST.*", "$JS.API.CONSUMER.NAMES.*",
			"$JS.ACK.>", "$KV.*.>", "$O.*.>", jobsAll, P+".dlq.>", P+".jobcancel.>")
		p.allowSub(P + ".jobcancel.>")
		// Job consumers stay (a consumer deleted loses no job, but
		// pauses a method), and no stream loses its messages.
		p.pubDeny = append(p.pubDeny, "$JS.API.CONSUMER.DELETE.*."+jobs.Consumer, "$JS.API.CONSUMER.DELETE.*."+jobs.WakersConsumer)
		for _, b := range fleet {
			// "$KV.*.>" (job records) must not reach the fleet's
			// buckets: only their owners write those.
			if !slices.Contains(owned, b) {
				p.pubDeny = append(p.pubDeny, "$KV."+b+".>")
			}
		}
	}
	// bodies: reads, writes and deletes objects of the bodies object
	// store (large request and response bodies; a reader deletes the
	// body it read, which purges the object's chunks: STREAM.PURGE of
	// that store's stream by name); reading a large object answers the
	// ordered consumer's flow control.
	bodies := func(p *perm) {
		p.allowPub("$JS.FC.OBJ_"+names.BucketBodies()+".>", "$JS.API.STREAM.PURGE.OBJ_"+names.BucketBodies())
		p.pubDenyExcept("$JS.API.STREAM.PURGE.>")
	}
	// caller: sends requests to replicas (an embedded router, handle
	// calls) and follows them.
	caller := func(p *perm) {
		p.allowPub(replicaCalls, names.RouteWildcard(), P+".routerstats")
		p.allowSub(names.LoadWildcard(), names.RouteLoadWildcard(), P+".routerstats")
	}

	var p perm
	user := role
	if role == Worker && workerID != "*" {
		user = workerID
	}
	p.allowSub(InboxPrefix(user) + ".>")
	p.pubDeny = append(p.pubDeny, "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.ACCOUNT.>",
		"$JS.API.META.>", "$JS.API.SERVER.>", "$SYS.>")
	if role != Scheduler && role != Operator {
		// Only the scheduler creates streams, buckets and object
		// stores beside the fleet's, and no one deletes a message.
		p.pubDeny = append(p.pubDeny, "$JS.API.STREAM.MSG.DELETE.>")
	}
	switch role {
	case Ingress:
		bindFleet(&p)
		for _, b := range fleet {
			kvRead(&p, b)
		}
		caller(&p)
		jobStreamsRW(&p)
		p.allowPub(names.GraphStatsSubject()) // its splitters' live counts
		bodies(&p)
		p.allowPub(wfInboxes) // workflow signals (history reads the journal by consumer)
		// A run cancelled before it started: its removal after the
		// retention (jobs' collectRun schedules <run>.gc.j and .gc.in).
		p.allowPub(P + ".wf.*.*.*.gc.*")
		// Chunked bodies (wire.BodySource): a request body's chunks go
		// to the inbox of the replica that pulls it, and the credit for a
		// response body to the replica's source inbox.
		p.allowPub("_INBOX.>")
	case Router:
		bindFleet(&p)
		for _, b := range fleet {
			kvRead(&p, b)
		}
		caller(&p)
		p.allowSub(names.RouteWildcard())
		// Answers go to the callers' inboxes whenever the replica
		// answers (allow_responses would expire after its TTL: a
		// request may run longer).
		p.allowPub("_INBOX.>")
	case Scheduler:
		ensureFleet(&p)
		for _, b := range fleet {
			kvRead(&p, b)
		}
		kvWrite(&p, names.BucketApps(), ">")
		kvWrite(&p, names.BucketAssignments(), ">")
		kvWrite(&p, names.BucketStatus(), ">")
		kvWrite(&p, names.BucketLeases(), "scheduler")
		// It creates and updates the async methods' streams, buckets,
		// object stores and consumers (package provision), the
		// dead-letter stream and the bodies object store.
		p.allowPub("$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.UPDATE.*")
		// The dashboard: each method's backlog and records.
		p.allowPub("$JS.API.STREAM.INFO.*", "$JS.API.CONSUMER.INFO.*.*", "$JS.API.CONSUMER.CREATE.>",
			"$JS.API.CONSUMER.DELETE.>", "$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.*")
		// Its watches of the job records pull (kvfollow); never from
		// a job stream's consumer.
		p.allowPub("$JS.API.CONSUMER.MSG.NEXT.*.*")
		p.pubDeny = append(p.pubDeny, "$JS.API.CONSUMER.DELETE.*."+jobs.Consumer, "$JS.API.CONSUMER.MSG.NEXT.*."+jobs.Consumer)
		p.allowSub(names.LoadWildcard(), P+".routerstats", names.GraphStatsSubject())
		// Its health checks of running replicas (health_check_period):
		// the replicas' health endpoint only, answered to its inbox.
		p.allowPub(P + ".replica.*." + protocol.EndpointHealth)
		// Workflow runs pinned to a version no replica runs any more:
		// it asks the workflow's runners to unpin them (it writes no
		// job record itself).
		p.allowPub(P + ".jobunpin.>")
	case Autoscaler:
		bindFleet(&p)
		for _, b := range fleet {
			kvRead(&p, b)
		}
		kvWrite(&p, names.BucketScale(), ">")
		kvWrite(&p, names.BucketLeases(), "autoscaler")
		p.allowPub("$JS.API.STREAM.INFO.*", "$JS.API.CONSUMER.INFO.*.*", "$JS.API.STREAM.MSG.GET.*", "$JS.API.DIRECT.GET.>")
		p.allowSub(names.LoadWildcard(), P+".routerstats", jobsAll)
	case Worker:
		// No purge: an object store's delete would purge the object's
		// chunks (STREAM.PURGE on OBJ_<store>, which NATS cannot tell
		// from a job stream's name); a worker's runner (jobs.Bind) writes
		// only the delete marker, and the chunks expire with the store.
		bindFleet(&p)
		for _, b := range fleet {
			if b != names.BucketAssignments() {
				kvRead(&p, b)
			}
		}
		// Its own assignment, by the subject forms only (kv Get, and
		// Watch: an ordered consumer created on
		// CONSUMER.CREATE.<stream>.<name>.<filter>).
		as, akey := kvStream(names.BucketAssignments()), "$KV."+names.BucketAssignments()+"."+workerID+".assignment"
		p.allowPub("$JS.API.STREAM.INFO."+as, "$JS.API.DIRECT.GET."+as+"."+akey, "$JS.API.CONSUMER.CREATE."+as+".*."+akey,
			"$JS.API.CONSUMER.DELETE."+as+".*", "$JS.API.CONSUMER.INFO."+as+".*")
		// Replicas: micro endpoints and discovery, load reports,
		// streamed chunks to a caller's stream inbox.
		p.allowSub(P+".replica.*.>", "$SRV.>")
		// Replies and streamed chunks go to the callers' inboxes.
		p.allowPub(names.LoadWildcard(), names.RouteLoadWildcard(), "_INBOX.>")
		caller(&p)
		workerJobs(&p, names, workerID, fleet)
		bodies(&p)
		// Workflow runs: their journals, inboxes (a child's end goes to
		// its parent's) and timers (jobs.Names.WorkflowSubject).
		p.allowPub(P + ".wf.>")
		// A runner of several async methods (a workflow and the job it
		// awaits, say) is woken by the jobs' subjects.
		p.allowSub(jobsAll)
	case Deployment:
		// Handle calls only: to the routers and (an embedded router's)
		// straight to replicas. Its replica's jobs run through the
		// worker's own connection (checkpoints, progress).
		p.allowPub(names.RouteWildcard(), replicaCalls)
		p.pubDeny = append(p.pubDeny, "$JS.>", "$KV.>", "$O.>", jobsAll, P+".wf.>")
	case Operator:
		return jwt.Permissions{Pub: jwt.Permission{Allow: []string{">"}}, Sub: jwt.Permission{Allow: []string{">"}}}, nil
	default:
		return jwt.Permissions{}, fmt.Errorf("unknown role %q (want %v, %s or %s)", role, Services, Deployment, Operator)
	}
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: dedupe(p.pub), Deny: dedupe(p.pubDeny)},
		Sub: jwt.Permission{Allow: dedupe(p.sub), Deny: dedupe(p.subDeny)},
	}, nil
}

// workerJobs allows a worker what running jobs needs (jobStreamsRW's
// rights, with the wildcards narrowed to shapes that exclude other
// workers' keys: see WorkerPermissions) and its own records.
func workerJobs(p *perm, names protocol.Names, workerID string, fleet []string) {
	P := names.Prefix()
	as := "KV_" + names.BucketAssignments()
	p.allowPub("$JS.API.STREAM.INFO.*",
		// Direct gets: by a body (batches of job messages), of a job
		// record, an object's metadata, a job message by subject.
		"$JS.API.DIRECT.GET.*", "$JS.API.DIRECT.GET.*.$KV.*.*", "$JS.API.DIRECT.GET.*.$O.>", "$JS.API.DIRECT.GET.*."+P+".>",
		"$JS.API.STREAM.MSG.GET.*",
		// Consumers: filters in the body, or of job records, objects'
		// chunks, job messages.
		"$JS.API.CONSUMER.CREATE.*.*", "$JS.API.CONSUMER.CREATE.*.*.$KV.*.*", "$JS.API.CONSUMER.CREATE.*.*.$O.>",
		"$JS.API.CONSUMER.CREATE.*.*."+P+".>",
		"$JS.API.CONSUMER.DURABLE.CREATE.>", "$JS.API.CONSUMER.INFO.>", "$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.MSG.NEXT.>",
		"$JS.API.CONSUMER.LIST.*", "$JS.API.CONSUMER.NAMES.*", "$JS.ACK.>",
		// Job records (one-token keys: request ids), objects, jobs.
		"$KV.*.*", "$O.*.>", P+".jobs.*.*.*", P+".dlq.>", P+".jobcancel.>")
	p.allowSub(P+".jobcancel.>", P+".jobunpin.>")
	p.pubDeny = append(p.pubDeny, "$JS.API.CONSUMER.DELETE.*."+jobs.Consumer,
		// The assignments: the forms with the key in the body, or a
		// one-token filter ("*", ">"), none of which the own key's
		// allows above match.
		"$JS.API.DIRECT.GET."+as, "$JS.API.DIRECT.GET."+as+".$KV.*.*", "$JS.API.STREAM.MSG.GET."+as,
		"$JS.API.CONSUMER.CREATE."+as+".*", "$JS.API.CONSUMER.CREATE."+as+".*.$KV.*.*",
		"$JS.API.CONSUMER.DURABLE.CREATE."+as+".>",
		// No pull from the assignments' stream: a pull consumer there
		// (the scheduler's, another worker's) would hand its messages
		// to whoever pulls. A worker's own watch is pushed to its inbox
		// (kvfollow.Options.Push), which only it may subscribe to.
		"$JS.API.CONSUMER.MSG.NEXT."+as+".*",
		// Nor list them (their names and filters).
		"$JS.API.CONSUMER.LIST."+as, "$JS.API.CONSUMER.NAMES."+as)
	for _, b := range fleet {
		switch b {
		case names.BucketHandlers(): // what handlers declare: any worker's
			p.allowPub("$KV." + b + ".>")
		case names.BucketWorkers():
			p.allowPub("$KV." + b + "." + workerID + ".registration")
			p.pubDeny = append(p.pubDeny, "$KV."+b+".*")
		case names.BucketReplicas():
			p.allowPub("$KV." + b + ".*.*." + workerID + ".*")
			p.pubDeny = append(p.pubDeny, "$KV."+b+".*")
		default:
			p.pubDeny = append(p.pubDeny, "$KV."+b+".>")
		}
	}
}

func dedupe(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}
