package serve

import (
	"context"
	"net/http"
	"sort"
	"strings"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// Methods is a Handler that dispatches on the method name: Request.Call for
// handle calls, else the first path segment below the route prefix
// ("/summarize" → "summarize"). The "" entry, if any, serves "/" and calls
// with no method. An unknown method is a 404 method_not_found.
type Methods map[string]HandlerFunc

// ServeRequest dispatches req to its method.
func (m Methods) ServeRequest(ctx context.Context, req *Request) (*Response, error) {
	name := MethodName(req)
	h, ok := m[name]
	if !ok {
		known := make([]string, 0, len(m))
		for k := range m {
			if k != "" {
				known = append(known, k)
			}
		}
		sort.Strings(known)
		return nil, &Error{Status: http.StatusNotFound, Code: protocol.ErrMethodNotFound,
			Msg: "unknown method " + quote(name) + "; methods: " + strings.Join(known, ", ")}
	}
	return h(ctx, req)
}

// MethodName is the method a request is for: Request.Call when set, else
// the first path segment.
func MethodName(req *Request) string {
	if req.Call != "" {
		return req.Call
	}
	p := strings.TrimPrefix(req.Path, "/")
	name, _, _ := strings.Cut(p, "/")
	return name
}

func quote(s string) string { return "\"" + s + "\"" }
