// Package secrets keeps secrets out of the serve config. A deployment's
// user_config string, or a process deployment's env value, may be a
// reference — exactly "${secret:NAME}" — that the worker resolves when it
// hands the value to the replica, from a file NAME in its secrets
// directory (Docker's and Kubernetes' /run/secrets convention). What the
// scheduler stores in KV, what GET /api/serve/config answers and what the
// status shows is only the reference.
//
// Why references rather than redaction on read: a secret stored in the
// Apps bucket is readable by everyone with read access to NATS, is copied
// into every assignment, and lives in the bucket's history; redaction
// would hide it from one HTTP answer only. A reference never puts the
// secret in NATS at all, and rotating it is replacing a file (and
// restarting the replicas that read it).
//
// Redact is the safety net for a config written without references: it
// masks string values under secret-looking keys (password, token, secret,
// api_key, credentials, private_key…) in what the admin API answers, and
// lists them so that the PUT can warn.
package secrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

var refRE = regexp.MustCompile(`^\$\{secret:([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\}$`)

// Ref returns the secret name s refers to, if s is a reference.
func Ref(s string) (string, bool) {
	m := refRE.FindStringSubmatch(s)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// Lookup returns a secret's value by name.
type Lookup func(name string) (string, error)

// ErrNotFound: no secret of that name.
var ErrNotFound = errors.New("no such secret")

// Dir looks secrets up as files in dir (one file per secret, its content
// the value; one trailing newline is dropped).
func Dir(dir string) Lookup {
	return func(name string) (string, error) {
		if dir == "" {
			return "", fmt.Errorf("secret %q: %w (the worker's secrets_dir is empty)", name, ErrNotFound)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("secret %q: %w in %s", name, ErrNotFound, dir)
		}
		if err != nil {
			return "", fmt.Errorf("secret %q: %w", name, err)
		}
		return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
	}
}

// ResolveJSON replaces every string in doc that is a reference with the
// secret's value. A doc without references is returned as it is (same
// bytes). Errors name the secret, never a value.
func ResolveJSON(doc json.RawMessage, look Lookup) (json.RawMessage, error) {
	if len(doc) == 0 || !bytes.Contains(doc, []byte("${secret:")) {
		return doc, nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode user_config: %w", err)
	}
	v, err := walk(v, look)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func walk(v any, look Lookup) (any, error) {
	switch t := v.(type) {
	case string:
		if name, ok := Ref(t); ok {
			return look(name)
		}
	case map[string]any:
		for k, e := range t {
			r, err := walk(e, look)
			if err != nil {
				return nil, err
			}
			t[k] = r
		}
	case []any:
		for i, e := range t {
			r, err := walk(e, look)
			if err != nil {
				return nil, err
			}
			t[i] = r
		}
	}
	return v, nil
}

// ResolveEnv returns env with every value that is a reference replaced by
// the secret's value (a new map when one is; env itself otherwise).
func ResolveEnv(env map[string]string, look Lookup) (map[string]string, error) {
	var out map[string]string
	for k, v := range env {
		name, ok := Ref(v)
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(env))
			for k2, v2 := range env {
				out[k2] = v2
			}
		}
		val, err := look(name)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", k, err)
		}
		out[k] = val
	}
	if out == nil {
		return env, nil
	}
	return out, nil
}

// Masked replaces a redacted value.
const Masked = "[REDACTED]"

var secretWords = map[string]bool{"password": true, "passwd": true, "passphrase": true, "secret": true, "token": true,
	"apikey": true, "credential": true, "credentials": true, "pwd": true}

// LooksSecret reports whether a key name usually holds a secret: one of
// its words (split at '_', '-', '.' and camelCase) is password, secret,
// token, credentials…, or two are api/access/private/secret + key.
// "tokenizer" and "max_tokens" are not.
func LooksSecret(key string) bool {
	var words []string
	cur := []rune{}
	flush := func() {
		if len(cur) > 0 {
			words = append(words, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	prevLower := false
	for _, r := range key {
		switch {
		case r == '_' || r == '-' || r == '.' || r == ' ':
			flush()
			prevLower = false
			continue
		case r >= 'A' && r <= 'Z' && prevLower:
			flush()
		}
		cur = append(cur, r)
		prevLower = r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
	}
	flush()
	for i, w := range words {
		if secretWords[w] {
			return true
		}
		if w == "key" && i > 0 && (words[i-1] == "api" || words[i-1] == "access" || words[i-1] == "private" || words[i-1] == "secret") {
			return true
		}
	}
	return false
}

// Redact masks every non-empty string under a secret-looking key of doc
// that is not a reference, and returns the masked paths (sorted, under
// prefix, e.g. "user_config.db.password").
func Redact(doc json.RawMessage, prefix string) (json.RawMessage, []string) {
	if len(doc) == 0 {
		return doc, nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return doc, nil
	}
	var paths []string
	v = redact(v, prefix, false, &paths)
	if len(paths) == 0 {
		return doc, nil
	}
	sort.Strings(paths)
	b, err := json.Marshal(v)
	if err != nil {
		return doc, nil
	}
	return b, paths
}

func redact(v any, path string, under bool, paths *[]string) any {
	switch t := v.(type) {
	case string:
		if _, ref := Ref(t); under && !ref && t != "" {
			*paths = append(*paths, path)
			return Masked
		}
	case map[string]any:
		for k, e := range t {
			t[k] = redact(e, path+"."+k, under || LooksSecret(k), paths)
		}
	case []any:
		for i, e := range t {
			t[i] = redact(e, fmt.Sprintf("%s[%d]", path, i), under, paths)
		}
	}
	return v
}

// RedactEnv masks env values under secret-looking names that are not
// references, returning the masked names.
func RedactEnv(env map[string]string) (map[string]string, []string) {
	var names []string
	for k, v := range env {
		if _, ref := Ref(v); LooksSecret(k) && !ref && v != "" {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return env, nil
	}
	sort.Strings(names)
	out := make(map[string]string, len(env))
	for k, v := range env {
		out[k] = v
	}
	for _, k := range names {
		out[k] = Masked
	}
	return out, names
}
