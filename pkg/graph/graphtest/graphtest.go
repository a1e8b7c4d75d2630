// Package graphtest holds what the tests of graphs register: in pkg/graph,
// which runs them, and in the ingress, which serves them.
package graphtest

import (
	"bytes"
	"context"
	"testing"

	"github.com/jetserve/jetserve/pkg/serve"
)

// Registry returns a registry holding every constructor of ctors under its
// name; a refused registration fails the test.
func Registry(tb testing.TB, ctors map[string]serve.Constructor) *serve.Registry {
	tb.Helper()
	reg := serve.NewRegistry()
	for name, ctor := range ctors {
		if err := reg.Register(name, ctor); err != nil {
			tb.Fatalf("register %s: %v", name, err)
		}
	}
	return reg
}

// Upper is a deployment that answers 200 with its request's body in upper
// case.
func Upper(context.Context, serve.Init) (serve.Handler, error) {
	return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
		return &serve.Response{Status: 200, Body: bytes.ToUpper(req.Body)}, nil
	}), nil
}
