package protocol_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/invopop/jsonschema"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/protocol/internal/errgen"
	"github.com/jetserve/jetserve/pkg/serve"
)

var update = flag.Bool("update", false, "rewrite schemas/*.schema.json from the Go types")

// schemaTypes is every document type that crosses a process boundary:
// the config file, each NATS message and the job record (the job status
// endpoint's body, the payload of a job message and of its KV record). schemas/ holds one JSON Schema
// per entry, generated from the Go type; the test fails when they differ.
var schemaTypes = map[string]any{
	"config":                 &config.ServeConfig{},
	"worker-info":            &protocol.WorkerInfo{},
	"handler-info":           &protocol.HandlerInfo{},
	"assignment":             &protocol.Assignment{},
	"replica-info":           &protocol.ReplicaInfo{},
	"load-report":            &protocol.LoadReport{},
	"router-stats":           &protocol.RouterStats{},
	"graph-stats":            &protocol.GraphStats{},
	"status":                 &protocol.Status{},
	"lease":                  &protocol.Lease{},
	"scale-decision":         &protocol.ScaleDecision{},
	"call-stats":             &protocol.CallStats{},
	"job-record":             &jobs.Record{},
	"workflow-journal-entry": &serve.JournalEntry{},
	"workflow-inbox-event":   &serve.InboxEvent{},
}

// unitSchema describes the config's unit types as their UnmarshalJSON
// accepts them: a duration is a Go duration string or a number of
// seconds, a size an integer of bytes or a quantity string.
func unitSchema(t reflect.Type) *jsonschema.Schema {
	switch t {
	case reflect.TypeOf(config.Duration(0)):
		return &jsonschema.Schema{Description: `A Go duration ("10s", "1m30s") or a number of seconds (0.5).`,
			OneOf: []*jsonschema.Schema{
				{Type: "string", Pattern: `^([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$`},
				{Type: "number", Minimum: "0"},
			}}
	case reflect.TypeOf(config.Bytes(0)):
		return &jsonschema.Schema{Description: "Bytes: an integer, or a quantity such as 512Mi or 2G.",
			OneOf: []*jsonschema.Schema{
				{Type: "integer", Minimum: "0"},
				{Type: "string", Pattern: `^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|K|M|G|T)?$`},
			}}
	case reflect.TypeOf(protocol.ReasonCode("")):
		s := &jsonschema.Schema{Type: "string", Description: "A protocol.ReasonCode (append-only; see schemas/README.md)."}
		for _, c := range protocol.ReasonCodes() {
			s.Enum = append(s.Enum, string(c))
		}
		return s
	case reflect.TypeOf(protocol.Resource("")):
		return &jsonschema.Schema{Type: "string", Enum: []any{string(protocol.ResourceCPU), string(protocol.ResourceGPU), string(protocol.ResourceMemory)}}
	}
	return nil
}

func generate(t *testing.T, v any) []byte {
	t.Helper()
	r := &jsonschema.Reflector{DoNotReference: false, ExpandedStruct: true, Mapper: unitSchema}
	s := r.Reflect(v)
	s.ID = jsonschema.ID("https://jetserve.dev/schemas/" + reflect.TypeOf(v).Elem().Name())
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestSchemasMatchGoTypes(t *testing.T) {
	dir := filepath.Join("..", "..", "schemas")
	for name, v := range schemaTypes {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".schema.json")
			want := generate(t, v)
			if *update {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read %s: %v (run: go test ./protocol -update)", path, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs from the Go type %T; run `go test ./protocol -update` and review the diff", path, v)
			}
		})
	}
}

// TestErrorCatalogueGenerated: errors_gen.go is what the catalogue
// generates (run `go generate ./protocol` in pkg after editing
// schemas/errors.json), and the catalogue only ever grew: the codes of
// testdata/error-codes.txt (rewritten by -update) come first, in order.
func TestErrorCatalogueGenerated(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "schemas", "errors.json"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := errgen.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want, err := errgen.Generate(cat)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("errors_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("errors_gen.go is stale; run `go generate ./protocol` in pkg")
	}

	var codes []string
	for _, c := range protocol.ErrorCodes() {
		codes = append(codes, string(c))
	}
	// -update appends new codes to the golden list, never rewrites it.
	const golden = "testdata/error-codes.txt"
	old, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	was := strings.Fields(string(old))
	if len(was) > len(codes) || !slices.Equal(codes[:len(was)], was) {
		t.Fatalf("error codes = %v, want %v first, in that order: the catalogue is append-only", codes, was)
	}
	if *update && len(codes) > len(was) {
		if err := os.WriteFile(golden, []byte(strings.Join(codes, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestErrorCodeAnswers: a few codes' answers, as clients rely on them.
func TestErrorCodeAnswers(t *testing.T) {
	for _, tc := range []struct {
		code                  protocol.ErrorCode
		status                int
		retryAfter, retryable bool
	}{
		{protocol.ErrBadRequest, 400, false, false},
		{protocol.ErrQueueFull, 503, true, false},
		{protocol.ErrJobQueueFull, 429, true, false},
		{protocol.ErrReplicaFull, 503, true, true},
		{protocol.ErrDraining, 503, true, true},
		{protocol.ErrNoReplicas, 503, true, false},
		{protocol.ErrTimeout, 504, false, false},
		{protocol.ErrRateLimited, 429, true, false},
		{protocol.ErrMethodNotAllowed, 405, false, false},
		{"no_such_code", 500, false, false},
	} {
		if got := tc.code.HTTPStatus(); got != tc.status {
			t.Errorf("%s.HTTPStatus() = %d, want %d", tc.code, got, tc.status)
		}
		if got := tc.code.RetryAfter(); got != tc.retryAfter {
			t.Errorf("%s.RetryAfter() = %v, want %v", tc.code, got, tc.retryAfter)
		}
		if got := tc.code.Retryable(); got != tc.retryable {
			t.Errorf("%s.Retryable() = %v, want %v", tc.code, got, tc.retryable)
		}
	}
}
