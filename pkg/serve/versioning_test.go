package serve_test

import (
	"context"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
)

// TestWorkflowVersioningDeclared: a workflow is pinned to its version by
// default, serve.AutoUpgrade declares auto_upgrade, and the serve
// config's async_methods override either.
func TestWorkflowVersioningDeclared(t *testing.T) {
	run := func(serve.Workflow, struct{}) (int, error) { return 0, nil }
	reg := serve.NewRegistry()
	if err := reg.Register("h", func(context.Context, serve.Init) (serve.Handler, error) { return nil, nil },
		serve.WithWorkflows(serve.NewWorkflow("pinned", run), serve.NewWorkflow("auto", run, serve.AutoUpgrade()))); err != nil {
		t.Fatal(err)
	}
	got := map[string]config.AsyncMethod{}
	for _, m := range serve.EffectiveAsync(reg.AsyncMethods("h"), nil) {
		got[m.Name] = m
	}
	if m := got["pinned"]; m.Versioning != config.VersioningPinned || !m.Pinned() || m.PinnedFor != config.DefaultPinnedFor {
		t.Errorf("default workflow: versioning %q pinned_for %s, want pinned for %s", m.Versioning, m.PinnedFor.D(), config.DefaultPinnedFor.D())
	}
	if m := got["auto"]; m.Versioning != config.VersioningAutoUpgrade || m.Pinned() {
		t.Errorf("AutoUpgrade workflow: versioning %q, want auto_upgrade (not pinned)", m.Versioning)
	}
	over := serve.EffectiveAsync(reg.AsyncMethods("h"), []config.AsyncMethod{{Name: "auto", Versioning: config.VersioningPinned,
		PinnedFor: config.Duration(3600e9)}})
	for _, m := range over {
		if m.Name == "auto" && (!m.Pinned() || m.PinnedFor.D().Hours() != 1) {
			t.Errorf("auto overridden by the config: versioning %q pinned_for %s, want pinned for 1h", m.Versioning, m.PinnedFor.D())
		}
	}
}
