package apidoc

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(p, []byte("openapi: 3.1.0\npaths:\n  /a/{id}:\n    parameters: []\n    get: {}\n  /b:\n    post: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/a/{id}", true}, {"GET", "/a/{id}/", true}, {"POST", "/a/{id}", false},
		{"POST", "/b", true}, {"GET", "/b", false}, {"GET", "/c", false}, {"PARAMETERS", "/a/{id}", false},
	} {
		if got := d.Has(tc.method, tc.path); got != tc.want {
			t.Errorf("Has(%s, %s) = %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
	if !d.HasPath("/b") || d.HasPath("/c") {
		t.Errorf("HasPath(/b), HasPath(/c) = %v, %v; want true, false", d.HasPath("/b"), d.HasPath("/c"))
	}
	if err := os.WriteFile(p, []byte("openapi: 3.1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil {
		t.Error("Load(a document without paths) succeeded")
	}
}

// TestTheDocumentLoads: schemas/openapi.yaml reads.
func TestTheDocumentLoads(t *testing.T) {
	d, err := Load("../../schemas/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !d.Has("GET", "/-/healthz") {
		t.Error("schemas/openapi.yaml: no GET /-/healthz")
	}
}
