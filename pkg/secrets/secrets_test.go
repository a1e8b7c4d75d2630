package secrets

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestResolveJSON(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hf_token"), []byte("hf_abc123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ResolveJSON(json.RawMessage(`{"model":"m","auth":{"token":"${secret:hf_token}"},"list":["${secret:hf_token}","x"],"n":1.50}`), Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatal(err)
	}
	if v["auth"].(map[string]any)["token"] != "hf_abc123" || v["list"].([]any)[0] != "hf_abc123" || v["model"] != "m" {
		t.Fatalf("ResolveJSON() = %s", got)
	}
	if !strings.Contains(string(got), "1.50") {
		t.Errorf("ResolveJSON() = %s: numbers must keep their text", got)
	}
	plain := json.RawMessage(`{"a": "b"}`)
	if got, err := ResolveJSON(plain, Dir(dir)); err != nil || string(got) != string(plain) {
		t.Errorf("ResolveJSON(no refs) = %s, %v; want the same bytes", got, err)
	}
	_, err = ResolveJSON(json.RawMessage(`{"k":"${secret:missing}"}`), Dir(dir))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("ResolveJSON(missing) = %v, want ErrNotFound naming it", err)
	}
	env, err := ResolveEnv(map[string]string{"HF_TOKEN": "${secret:hf_token}", "X": "1"}, Dir(dir))
	if err != nil || env["HF_TOKEN"] != "hf_abc123" || env["X"] != "1" {
		t.Errorf("ResolveEnv() = %v, %v", env, err)
	}
	if _, err := ResolveEnv(map[string]string{"K": "${secret:../etc/passwd}"}, Dir(dir)); err != nil {
		t.Errorf("a reference with a path is not a reference: ResolveEnv() = %v, want it kept literal", err)
	}
}

func TestRef(t *testing.T) {
	for s, want := range map[string]string{"${secret:a.b-c_1}": "a.b-c_1", "${secret:}": "", "x${secret:a}": "", "${secret:../x}": "", "${secret:a/b}": ""} {
		if got, _ := Ref(s); got != want {
			t.Errorf("Ref(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestLooksSecret(t *testing.T) {
	for k, want := range map[string]bool{"password": true, "db_password": true, "apiKey": true, "api_key": true, "hf_token": true,
		"secretKey": true, "AWS_SECRET_ACCESS_KEY": true, "credentials": true, "tokenizer": false, "max_tokens": false,
		"author": false, "key": false, "model": false, "keyword_count": false} {
		if got := LooksSecret(k); got != want {
			t.Errorf("LooksSecret(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestRedact(t *testing.T) {
	doc := json.RawMessage(`{"api_key":"sk-live-1","tokenizer":"bert","db":{"password":"pw","host":"h"},"hf_token":"${secret:hf}","creds":{"credentials":["a","b"]}}`)
	got, paths := Redact(doc, "user_config")
	want := []string{"user_config.api_key", "user_config.creds.credentials[0]", "user_config.creds.credentials[1]", "user_config.db.password"}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("Redact() paths = %v, want %v", paths, want)
	}
	for _, leak := range []string{"sk-live-1", `"pw"`, `"a"`} {
		if strings.Contains(string(got), leak) {
			t.Errorf("Redact() = %s, still holds %s", got, leak)
		}
	}
	if !strings.Contains(string(got), `"${secret:hf}"`) || !strings.Contains(string(got), `"bert"`) {
		t.Errorf("Redact() = %s, want references and other values kept", got)
	}
	env, names := RedactEnv(map[string]string{"OPENAI_API_KEY": "sk-1", "HF_TOKEN": "${secret:hf}", "MODE": "fast"})
	if !reflect.DeepEqual(names, []string{"OPENAI_API_KEY"}) || env["OPENAI_API_KEY"] != Masked || env["MODE"] != "fast" {
		t.Errorf("RedactEnv() = %v, %v", env, names)
	}
}
