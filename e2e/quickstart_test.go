package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
)

// TestQuickstartOwnModule runs examples/quickstart as a user's repository
// would: its worker binary built from its own module (GOWORK=off, its own
// go.mod with replace lines), joined to a fleet of stock services, its
// config deployed beside an application of the stock worker with
// `jetserve deploy --merge`, and a request served by its replicas.
func TestQuickstartOwnModule(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerEcho) // the stock worker's
	qs := f.AddWorkerFrom(fleet.QuickstartWorker, true)
	f.WaitWorkers(2)

	stock := deployment{app: "stock", handler: handlerEcho, replicas: 1}
	f.Deploy(serveConfig(t, stock.application()))
	f.WaitApp(deployTimeout, "stock", 1, nil)

	root, err := fleet.Root(".")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "examples", "quickstart", "config.yaml")
	if _, err := os.Stat(cfg); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := fleet.RunCmd(t, 30*time.Second, bins.Path(t, fleet.CLI), "deploy", cfg, "--merge", "--admin", f.AdminURL())
	if err != nil {
		t.Fatalf("jetserve deploy --merge: %v\n%s\n%s", err, out, errOut)
	}
	f.WaitApp(deployTimeout, "greet", 2, nil)

	st := f.MustStatus()
	if _, ok := st.Applications["stock"]; !ok {
		t.Fatalf("deploy --merge removed app stock: %v", st.Applications)
	}
	for _, r := range st.Applications["greet"].Deployments["Greeter"].Replicas {
		if r.WorkerID != qs.ID {
			t.Errorf("Greeter replica %s runs on %s, want the quickstart worker %s (the only one with its handler)", r.ID, r.WorkerID, qs.ID)
		}
	}
	r := fleet.MustDo(t, http.MethodPost, f.URL()+"/greet", []byte(`{"name":"Ada"}`), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("POST /greet = %v, want 200", r)
	}
	var reply struct{ Message, Replica string }
	if err := json.Unmarshal(r.Body, &reply); err != nil || reply.Message != "Hello, Ada!" {
		t.Fatalf("POST /greet = %s (%v), want message %q", r.Body, err, "Hello, Ada!")
	}
	if r := fleet.MustDo(t, http.MethodPost, f.URL()+"/greet", []byte(`{}`), nil); r.Status != http.StatusBadRequest {
		t.Errorf("POST /greet without a name = %v, want 400", r)
	}
}
