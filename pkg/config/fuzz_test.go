package config

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

// FuzzParse: any document is either refused with field errors or parsed
// into a config that validates and survives a JSON round trip unchanged
// (what the admin API stores and GET /api/serve/config serves back).
func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/valid.yaml", "../../examples/config.yaml", "../../examples/digits/config.yaml", "../../examples/quickstart/config.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"applications: []",
		"applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [{name: d, handler: h, num_replicas: auto}]}\n",
		"applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [{name: d, runtime: process, command: [x], protocol: oip, oip_models: [m]}]}\n",
		`{"applications":[{"name":"a","route_prefix":"/a","ingress":"d","deployments":[{"name":"d","handler":"h","health_check_timeout":1.5,"resources":{"memory":"512Mi"}}]}]}`,
		"applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [{name: d, handler: h, async_methods: [{name: m, backoff: [1s, 2]}]}]}\n",
		"applications:\n- {name: a, route_prefix: /a, deployments: [{name: d, handler: h, uses: [e]}, {name: e, handler: h}], graph: {nodes: [{name: root, type: splitter, steps: [{deployment: d, weight: 95}, {deployment: e, weight: 5}]}]}}\n",
		"applications:\n- {name: a, route_prefix: /a, deployments: [{name: d, handler: h}], graph: {nodes: [{name: root, type: switch, steps: [{deployment: d, condition: '$.x == 1'}, {node: e}]}, {name: e, type: ensemble, steps: [{deployment: d}], combiner: {deployment: d}}]}}\n",
		"applications: {a: 1}",
		"- 1\n- 2",
		"&a [*a]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg, err := Parse(doc)
		if err != nil {
			if _, ok := err.(Errors); !ok {
				t.Fatalf("Parse() error %T %v, want config.Errors", err, err)
			}
			return
		}
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Fatalf("Parse() accepted a config that does not validate: %v", errs)
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("encode an accepted config: %v", err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("the accepted config, encoded, is refused: %v\n%s", err, b)
		}
		b2, _ := json.Marshal(again)
		var x, y any
		_ = json.Unmarshal(b, &x)
		_ = json.Unmarshal(b2, &y)
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("round trip changed the config:\n%s\n%s", b, b2)
		}
	})
}
