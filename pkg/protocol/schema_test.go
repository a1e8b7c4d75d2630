package protocol_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/invopop/jsonschema"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
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

func TestErrorCatalogueMatches(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "schemas", "errors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Codes []struct {
			Code string `json:"code"`
		} `json:"codes"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range doc.Codes {
		got = append(got, c.Code)
	}
	var want []string
	for _, c := range protocol.ErrorCodes() {
		want = append(want, string(c))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("schemas/errors.json codes = %v, want %v (append-only, same order)", got, want)
	}
}
