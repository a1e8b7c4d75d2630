package models

import (
	"reflect"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
)

func TestFromConfig(t *testing.T) {
	sc, err := config.Parse([]byte(`applications:
- name: vision
  route_prefix: /vision
  ingress: Front
  deployments:
  - {name: Front, handler: front}
  - {name: Resnet, handler: resnet, protocol: oip}
  - {name: Digits, runtime: process, command: [python3, serve.py], protocol: oip, oip_models: [digits, digits-v2]}
- {name: text, route_prefix: /text, ingress: T, deployments: [{name: T, handler: t}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	tab := FromConfig(sc)
	if got, want := tab.Names(), []string{"Resnet", "digits", "digits-v2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %v, want %v (oip deployments only, oip_models else the deployment name)", got, want)
	}
	tests := []struct {
		name string
		want Model
		ok   bool
	}{
		{"Resnet", Model{Name: "Resnet", App: "vision", Deployment: "Resnet", Runtime: "go"}, true},
		{"digits-v2", Model{Name: "digits-v2", App: "vision", Deployment: "Digits", Runtime: "process"}, true},
		{"Digits", Model{}, false}, // a deployment listing oip_models is not also served under its own name
		{"Front", Model{}, false},
		{"resnet", Model{}, false}, // names are case-sensitive
	}
	for _, tt := range tests {
		if got, ok := tab.Lookup(tt.name); got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
	var empty *Table
	if _, ok := empty.Lookup("x"); ok || len(empty.Names()) != 0 {
		t.Error("a nil table (config not loaded yet) must know no model")
	}
}
