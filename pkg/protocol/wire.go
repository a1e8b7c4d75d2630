package protocol

// Headers of a sync request or response over NATS. The body is the message
// data, never re-encoded; metadata travels in headers so that a hop costs no
// JSON work. NATS headers are case-sensitive: use these constants.
const (
	HdrMethod      = "Jetserve-Method"   // HTTP method of the request
	HdrPath        = "Jetserve-Path"     // path below the application's route prefix
	HdrQuery       = "Jetserve-Query"    // raw URL query
	HdrCall        = "Jetserve-Call"     // deployment method name; empty = the default handler
	HdrStream      = "Jetserve-Stream"   // inbox streamed chunks go to; set = streaming call
	HdrDeadline    = "Jetserve-Deadline" // unix milliseconds after which the caller gave up
	HdrStatus      = "Jetserve-Status"   // HTTP status of a response
	HdrError       = "Jetserve-Error"    // an ErrorCode, set on every error response
	HdrChunkSeq    = "Jetserve-Seq"      // sequence of a streamed chunk; 0 is the head (status+headers)
	HdrChunks      = "Jetserve-Chunks"   // on the final reply of a streaming call: chunks sent
	HdrReplica     = "Jetserve-Replica"  // the replica that served a response
	HdrAttempt     = "Jetserve-Attempt"  // which routing attempt this is (2, 3, …; absent on the first)
	HdrRequestID   = "X-Request-Id"
	HdrTraceParent = "traceparent"
	// HdrHTTPPrefix prefixes forwarded HTTP headers: "Http-Content-Type".
	HdrHTTPPrefix = "Http-"
	// HdrModelID carries a request's multiplexed model id over NATS: the
	// HTTP header HeaderModelID forwarded like any other. Routers read it to
	// prefer a replica that holds the model.
	HdrModelID = HdrHTTPPrefix + HeaderModelID
	// HdrProbe marks a router's liveness probe, sent on a replica's call
	// subject (wire.ProbeMsg) so that it is ordered after the router's
	// requests; the replica answers it without calling user code.
	HdrProbe = "Jetserve-Probe"
	// HdrCancel marks a cancel, sent on a replica's call subject
	// (wire.CancelMsg) by a caller that gave up on a request; its body is
	// the request's reply subject. The replica cancels the request's
	// context; nothing is answered.
	HdrCancel = "Jetserve-Cancel"

	// HeaderPrincipal is the HTTP header the ingress sets on every request
	// it forwards to a deployment: who sent it ("key:<name>", "jwt:<sub>",
	// or "anonymous" when auth is off). A client's own is dropped. Over
	// NATS it is Http-X-Jetserve-Principal.
	HeaderPrincipal = "X-Jetserve-Principal"
)

// HeaderModelID is the HTTP header naming the model a request is for
// (Ray Serve's serve_multiplexed_model_id), in Go's canonical form: a
// client may send it in any case. The ingress sets it to the OIP model name
// of a /v2/models/{name} request.
const HeaderModelID = "Serve_multiplexed_model_id"

// ErrorCode is a machine-readable error that crosses the wire. The list is
// append-only; schemas/errors.json documents each code and its HTTP status.
type ErrorCode string

// Error codes.
const (
	ErrBadRequest     ErrorCode = "bad_request"      // 400: malformed input
	ErrNotFound       ErrorCode = "not_found"        // 404: unknown route, app, deployment or method
	ErrBodyTooLarge   ErrorCode = "body_too_large"   // 413
	ErrQueueFull      ErrorCode = "queue_full"       // 503 + Retry-After: max_queued_requests reached
	ErrReplicaFull    ErrorCode = "replica_full"     // replica at max_ongoing_requests (router retries)
	ErrNoReplicas     ErrorCode = "no_replicas"      // 503: no running replica within the timeout
	ErrTimeout        ErrorCode = "timeout"          // 504/408: request_timeout passed
	ErrHandler        ErrorCode = "handler_error"    // 500: the deployment returned an error
	ErrDraining       ErrorCode = "draining"         // replica is shutting down (router retries)
	ErrUnavailable    ErrorCode = "unavailable"      // 503: a service it needs is down
	ErrInvalidConfig  ErrorCode = "invalid_config"   // 400 from the admin API
	ErrInternal       ErrorCode = "internal"         // 500
	ErrCancelled      ErrorCode = "cancelled"        // 499: the caller went away
	ErrMethodNotFound ErrorCode = "method_not_found" // 404: the deployment has no such method
	// ErrReplicaLost: the replica holding the request vanished (its worker
	// died, it stopped answering, or its reply was lost) and the request
	// was not safe to retry (503 + Retry-After).
	ErrReplicaLost ErrorCode = "replica_lost"
	// Refusals of the HTTP servers' security layer.
	ErrUnauthorized    ErrorCode = "unauthorized"      // 401: no valid API key or bearer token
	ErrForbidden       ErrorCode = "forbidden"         // 403: the credential's scopes do not cover this
	ErrRateLimited     ErrorCode = "rate_limited"      // 429 + Retry-After: the principal's rate limit
	ErrURITooLong      ErrorCode = "uri_too_long"      // 414: request target beyond max_url_bytes
	ErrHeadersTooLarge ErrorCode = "headers_too_large" // 431: header block beyond max_header_bytes
	ErrRequestIDInUse  ErrorCode = "request_id_in_use" // 409: a job id another principal owns
	// Durable workflows.
	ErrNonDeterministic ErrorCode = "non_deterministic" // 409: changed workflow code asks for another step than its journal holds
	ErrRunFinished      ErrorCode = "run_finished"      // 409: a signal to a workflow run that has ended
)

// Retryable reports whether a router may send the request to another
// replica after this error: the replica never started the work.
func (c ErrorCode) Retryable() bool {
	return c == ErrReplicaFull || c == ErrDraining
}

// ErrorCodes lists every code, in catalogue order.
func ErrorCodes() []ErrorCode {
	return []ErrorCode{ErrBadRequest, ErrNotFound, ErrBodyTooLarge, ErrQueueFull, ErrReplicaFull,
		ErrNoReplicas, ErrTimeout, ErrHandler, ErrDraining, ErrUnavailable, ErrInvalidConfig,
		ErrInternal, ErrCancelled, ErrMethodNotFound, ErrReplicaLost,
		ErrUnauthorized, ErrForbidden, ErrRateLimited, ErrURITooLong, ErrHeadersTooLarge, ErrRequestIDInUse,
		ErrNonDeterministic, ErrRunFinished}
}
