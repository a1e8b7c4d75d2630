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
)

var update = flag.Bool("update", false, "rewrite schemas/*.schema.json from the Go types")

// schemaTypes is every document type that crosses a process boundary:
// the config file, each NATS message and the job record (the job status
// endpoint's body, the payload of a job message and of its KV record). schemas/ holds one JSON Schema
// per entry, generated from the Go type; the test fails when they differ.
var schemaTypes = map[string]any{
	"config":         &config.ServeConfig{},
	"worker-info":    &protocol.WorkerInfo{},
	"handler-info":   &protocol.HandlerInfo{},
	"assignment":     &protocol.Assignment{},
	"replica-info":   &protocol.ReplicaInfo{},
	"load-report":    &protocol.LoadReport{},
	"router-stats":   &protocol.RouterStats{},
	"status":         &protocol.Status{},
	"lease":          &protocol.Lease{},
	"scale-decision": &protocol.ScaleDecision{},
	"job-record":     &jobs.Record{},
}

func generate(t *testing.T, v any) []byte {
	t.Helper()
	r := &jsonschema.Reflector{DoNotReference: false, ExpandedStruct: true}
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
