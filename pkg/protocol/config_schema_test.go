package protocol_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// configSchema compiles schemas/config.schema.json.
func configSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "schemas", "config.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("config.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("config.schema.json")
	if err != nil {
		t.Fatalf("compile config.schema.json: %v", err)
	}
	return s
}

// asJSONValue turns YAML or JSON bytes into the value the validator takes.
func asJSONValue(t *testing.T, b []byte) any {
	t.Helper()
	var y any
	if err := yaml.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(y)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Config validation and the JSON Schema agree on every config the project
// ships, and on what GET /api/serve/config serves back (the parsed config,
// defaults filled, encoded as JSON).
func TestShippedConfigsMatchTheSchema(t *testing.T) {
	s := configSchema(t)
	files := []string{"../config/testdata/valid.yaml", "../../examples/config.yaml",
		"../../examples/digits/config.yaml", "../../examples/quickstart/config.yaml"}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Validate(asJSONValue(t, b)); err != nil {
				t.Errorf("%s as written fails the schema: %v", f, err)
			}
			cfg, err := config.Parse(b)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			served, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Validate(asJSONValue(t, served)); err != nil {
				t.Errorf("%s parsed and served back fails the schema: %v\n%s", f, err, served)
			}
		})
	}
}

// What the schema refuses, Parse refuses too, naming the same field.
func TestSchemaAndParseRefuseAlike(t *testing.T) {
	s := configSchema(t)
	app := func(dep string) string {
		return "applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [" + dep + "]}\n"
	}
	for _, tc := range []struct{ doc, field string }{
		{app(`{name: d, handler: h, max_ongoing_requests: 0}`), "max_ongoing_requests"},
		{app(`{name: d, handler: h, max_ongoing_requests: many}`), "max_ongoing_requests"},
		{app(`{name: d, handler: h, num_replicas: -1}`), "num_replicas"},
		{app(`{name: d, handler: h, health_check_period: soon}`), "health_check_period"},
		{app(`{name: d, handler: h, resources: {memory: lots}}`), "memory"},
		{app(`{name: d, handler: h, runtime: docker}`), "runtime"},
		{app(`{name: d, handler: h, bogus: 1}`), "bogus"},
	} {
		if err := s.Validate(asJSONValue(t, []byte(tc.doc))); err == nil {
			t.Errorf("the schema accepts %q, want it refused", tc.doc)
		}
		if _, err := config.Parse([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", tc.doc, err, tc.field)
		}
	}
}
