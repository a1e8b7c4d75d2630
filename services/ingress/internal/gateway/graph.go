package gateway

import (
	"context"
	"net/http"
	"strconv"

	"github.com/jetserve/jetserve/pkg/graph"
	"github.com/jetserve/jetserve/pkg/httperr"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/rs/zerolog"
)

// serveGraph runs route's graph for req: the answer of the step that
// answers for the graph, streamed when the client asks; a failed step is
// the request's failure, with the step's status and code and the step
// named ({"error", "message", "step", "request_id"}).
func (h *Handler) serveGraph(ctx context.Context, w http.ResponseWriter, r *http.Request, x *exchange, route routes.Route,
	req *serve.Request, log func() zerolog.Logger) {
	o := graph.Options{Caller: h.o.Caller}
	if h.o.OnSplit != nil {
		o.OnSplit = func(node, step string) { h.o.OnSplit(route.App, node, step) }
	}
	if wantsStream(r) {
		sink := &httpSink{w: w}
		err := route.Graph.Stream(ctx, req, sink, o)
		if err != nil {
			x.code = serve.AsError(err).Code
			if !sink.headed {
				writeGraphError(w, err, x.rid)
				return
			}
			l := log()
			l.Warn().Err(err).Msg("graph stream ended with an error")
		}
		return
	}
	resp, err := route.Graph.Serve(ctx, req, o)
	if err != nil {
		x.code = serve.AsError(err).Code
		writeGraphError(w, err, x.rid)
		return
	}
	copyResponseHeaders(w.Header(), resp.Header)
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// graphErrorBody is a failed graph request's answer.
type graphErrorBody struct {
	Error     protocol.ErrorCode `json:"error"`
	Message   string             `json:"message"`
	Step      string             `json:"step,omitempty"`
	RequestID string             `json:"request_id,omitempty"`
}

// writeGraphError answers a graph's failure with the failed step's status
// (platform codes mapped as for any request: 503 + Retry-After for an
// overloaded or unavailable step, 504 for a timeout).
func writeGraphError(w http.ResponseWriter, err error, rid string) {
	e := serve.AsError(err)
	body := graphErrorBody{Error: e.Code, Message: e.Msg, RequestID: rid}
	if se, ok := graph.AsStepError(err); ok {
		body.Step = se.Step
	}
	httperr.WriteBody(w, errorStatus(e.Code, e.Status), e.Code, body)
}
