package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/jetserve/jetserve/pkg/httpauth"
)

func TestKeysNew(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"keys", "new", "--name", "ci", "--apps", "text,greet", "--operator"}, nil, nil, &out, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	key := strings.TrimSpace(lines[1])
	entries, err := httpauth.ParseKeys([]byte("keys:\n" + lines[3] + "\n"))
	if err != nil {
		t.Fatalf("the printed line does not parse: %v\n%s", err, out.String())
	}
	if e := entries[0]; e.Name != "ci" || e.SHA256 != httpauth.Hash(key) || len(e.Apps) != 2 || e.Scopes[0] != httpauth.ScopeOperator {
		t.Fatalf("keys new printed %+v for key %q", e, key)
	}
	var hashed bytes.Buffer
	if err := run(context.Background(), []string{"keys", "hash"}, nil, strings.NewReader(key+"\n"), &hashed, &hashed); err != nil || strings.TrimSpace(hashed.String()) != httpauth.Hash(key) {
		t.Fatalf("keys hash = %q, %v", hashed.String(), err)
	}
	if err := run(context.Background(), []string{"keys", "new", "--name", "bad name", "--apps", "x"}, nil, nil, &out, &out); err == nil {
		t.Fatal("keys new with an invalid name succeeded")
	}
	if err := run(context.Background(), []string{"keys", "new", "--name", "x"}, nil, nil, &out, &out); err == nil {
		t.Fatal("keys new without --apps or --admin succeeded")
	}
}

// The admin commands send $JETSERVE_ADMIN_KEY, call and jobs
// $JETSERVE_API_KEY, each to its own server only.
func TestKeysSentFromEnvironment(t *testing.T) {
	var mu sync.Mutex
	got := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"applications": {}, "workers": [], "request_id": "j1", "status": "QUEUED"}`))
	}))
	defer srv.Close()
	env := []string{"JETSERVE_ADMIN_KEY=adm-key", "JETSERVE_API_KEY=api-key", "JETSERVE_ADMIN=" + srv.URL, "JETSERVE_URL=" + srv.URL}
	var out bytes.Buffer
	_ = run(context.Background(), []string{"status", "-o", "json"}, env, nil, &out, &out)
	_ = run(context.Background(), []string{"call", "/echo", "x"}, env, nil, &out, &out)
	_ = run(context.Background(), []string{"jobs", "status", "text/train", "j1"}, env, nil, &out, &out)
	mu.Lock()
	defer mu.Unlock()
	for path, want := range map[string]string{"/api/serve/applications": "Bearer adm-key", "/echo": "Bearer api-key", "/text/train/status": "Bearer api-key"} {
		if got[path] != want {
			t.Errorf("%s got Authorization %q, want %q (all: %v)", path, got[path], want, got)
		}
	}
}
