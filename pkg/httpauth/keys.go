package httpauth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Scopes a credential may hold besides its applications.
const (
	// ScopeOperator lets a caller of the ingress's job API see, wait for
	// and cancel every principal's jobs (not only its own).
	ScopeOperator = "operator"
	// ScopeAdmin allows every admin API call.
	ScopeAdmin = "admin"
	// ScopeAdminRead allows the admin API's reads (status, config,
	// dashboard), not its writes.
	ScopeAdminRead = "admin:read"
)

var knownScopes = []string{ScopeOperator, ScopeAdmin, ScopeAdminRead}

// AllApps in a key's apps list grants every application.
const AllApps = "*"

// KeyPrefix starts every key NewKey makes, so that a leaked key is easy
// to recognise (secret scanners, logs).
const KeyPrefix = "jsk_"

// KeyEntry is one API key in a keys file: its name (the principal its
// requests and jobs belong to), the SHA-256 of the key and what it may do.
// The key itself is never stored.
type KeyEntry struct {
	Name string `yaml:"name"`
	// SHA256 is the hex SHA-256 of the key.
	SHA256 string `yaml:"sha256"`
	// Apps are the applications the key may call through the ingress;
	// "*" is every application.
	Apps []string `yaml:"apps,omitempty"`
	// Scopes are operator, admin or admin:read.
	Scopes []string `yaml:"scopes,omitempty"`
	// RateLimit overrides the server's rate_limit for this key
	// (requests per second; 0 = the server's).
	RateLimit float64 `yaml:"rate_limit,omitempty"`
}

// KeysFile is the document a keys file holds.
type KeysFile struct {
	Keys []KeyEntry `yaml:"keys"`
}

var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)

// NewKey returns a new random key (32 bytes from crypto/rand, base64url,
// behind KeyPrefix) and its hash for a keys file.
func NewKey() (key, sha string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("random key: %w", err)
	}
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return key, Hash(key), nil
}

// Hash is the hex SHA-256 of key, what a keys file stores. Keys are
// high-entropy random strings, so a fast hash is enough: there is nothing
// to brute-force that a slow one would protect (the same reasoning as
// GitHub's and Stripe's tokens).
func Hash(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// ParseKeys decodes and checks a keys file; errors name the entry and
// field at fault, never a hash.
func ParseKeys(b []byte) ([]KeyEntry, error) {
	var f KeysFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("keys file is empty: want `keys:` with at least one entry")
		}
		return nil, fmt.Errorf("decode keys file: %w", err)
	}
	if len(f.Keys) == 0 {
		return nil, errors.New("keys: want at least one entry")
	}
	var errs []error
	names := map[string]bool{}
	hashes := map[string]bool{}
	for i, k := range f.Keys {
		at := fmt.Sprintf("keys[%d]", i)
		if !keyNameRE.MatchString(k.Name) {
			errs = append(errs, fmt.Errorf("%s.name: want 1..64 letters, digits, '_', '.', '@' or '-', got %q", at, k.Name))
		} else if names[k.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", at, k.Name))
		}
		names[k.Name] = true
		h := strings.ToLower(k.SHA256)
		if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
			errs = append(errs, fmt.Errorf("%s.sha256 (key %q): want 64 hex digits (jetserve keys new prints it)", at, k.Name))
		} else if hashes[h] {
			errs = append(errs, fmt.Errorf("%s.sha256 (key %q): the same key is listed twice", at, k.Name))
		}
		hashes[h] = true
		f.Keys[i].SHA256 = h
		for _, a := range k.Apps {
			if a == "" {
				errs = append(errs, fmt.Errorf("%s.apps (key %q): empty application name", at, k.Name))
			}
		}
		for _, s := range k.Scopes {
			if !slices.Contains(knownScopes, s) {
				errs = append(errs, fmt.Errorf("%s.scopes (key %q): unknown scope %q (want %s)", at, k.Name, s, strings.Join(knownScopes, ", ")))
			}
		}
		if k.RateLimit < 0 {
			errs = append(errs, fmt.Errorf("%s.rate_limit (key %q): must be >= 0", at, k.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f.Keys, nil
}

// Line is the keys-file entry (one YAML flow line) for a key named name
// with hash sha.
func Line(name, sha string, apps, scopes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - {name: %s, sha256: %s", name, sha)
	if len(apps) > 0 {
		fmt.Fprintf(&b, ", apps: [%s]", quoteAll(apps))
	}
	if len(scopes) > 0 {
		fmt.Fprintf(&b, ", scopes: [%s]", quoteAll(scopes))
	}
	b.WriteString("}")
	return b.String()
}

func quoteAll(ss []string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(out, ", ")
}
