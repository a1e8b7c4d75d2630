package protocol

// Headers of a sync request or response over NATS. The body is the message
// data, never re-encoded; metadata travels in headers so that a hop costs no
// JSON work. NATS headers are case-sensitive: use these constants.
const (
	HdrMethod      = "Jetserve-Method"     // HTTP method of the request
	HdrPath        = "Jetserve-Path"       // path below the application's route prefix
	HdrQuery       = "Jetserve-Query"      // raw URL query
	HdrCall        = "Jetserve-Call"       // deployment method name; empty = the default handler
	HdrStream      = "Jetserve-Stream"     // inbox streamed chunks go to; set = streaming call
	HdrDeadline    = "Jetserve-Deadline"   // unix milliseconds after which the caller gave up
	HdrStatus      = "Jetserve-Status"     // HTTP status of a response
	HdrError       = "Jetserve-Error"      // an ErrorCode, set on every error response
	HdrChunkSeq    = "Jetserve-Seq"        // sequence of a streamed chunk; 0 is the head (status+headers)
	HdrChunks      = "Jetserve-Chunks"     // on the final reply of a streaming call: chunks sent
	HdrReplica     = "Jetserve-Replica"    // the replica that served a response
	HdrCredit      = "Jetserve-Credit"     // to a body source: highest chunk sequence the receiver takes, or "abort"
	HdrBodyEnd     = "Jetserve-Body-End"   // on a body's last chunk: "<length> <crc32c hex>"
	HdrBodyError   = "Jetserve-Body-Error" // on a chunk: the body source failed (why)
	HdrAttempt     = "Jetserve-Attempt"    // which routing attempt this is (2, 3, …; absent on the first)
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

	// HeaderBodyObject, on a request or a response, says its body is not
	// in the message but in the bodies object store (Names.BucketBodies)
	// under this name: a body larger than one NATS message. Only the
	// ingress sets it on requests and only a replica on responses; a
	// client's and a handler's own are dropped.
	HeaderBodyObject = "X-Jetserve-Body-Object"
	// HeaderBodyAccept, on a request, says its caller reads a response
	// body from the bodies object store (HeaderBodyObject): the ingress
	// sets it; handle calls do not, and get bodies inline.
	HeaderBodyAccept = "X-Jetserve-Body-Accept"
	// HeaderBodySource, on a request or a response, says its body is not
	// in the message but pulled in chunks from a body source (see
	// wire.BodySource): "<subject> <length>", length -1 when unknown.
	// Only the ingress sets it on requests and only a replica on
	// responses; a client's and a handler's own are dropped.
	HeaderBodySource = "X-Jetserve-Body-Source"
	// BodyAcceptChunked is the HeaderBodyAccept value of a caller that
	// pulls a large response body in chunks (HeaderBodySource) rather
	// than from the object store (any other value).
	BodyAcceptChunked = "chunked"
)

// HeaderModelID is the HTTP header naming the model a request is for
// (Ray Serve's serve_multiplexed_model_id), in Go's canonical form: a
// client may send it in any case. The ingress sets it to the OIP model name
// of a /v2/models/{name} request.
const HeaderModelID = "Serve_multiplexed_model_id"

// ErrorCode is a machine-readable error that crosses the wire. The list is
// append-only; schemas/errors.json defines each code with its HTTP status,
// Retry-After and retryable answer, and errors_gen.go is generated from it.
type ErrorCode string

//go:generate go run ./internal/errgen/cmd/errgen -in ../../schemas/errors.json -out errors_gen.go
