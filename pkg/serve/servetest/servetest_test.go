package servetest_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/servetest"
	"github.com/rs/zerolog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve.Local keeps the Caller contract.
func TestLocalKeepsTheContract(t *testing.T) {
	reg := serve.NewRegistry()
	if err := servetest.Register(reg); err != nil {
		t.Fatal(err)
	}
	local, err := serve.NewLocal(context.Background(), reg, servetest.App(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close(context.Background()) })
	servetest.Run(t, local)
}
