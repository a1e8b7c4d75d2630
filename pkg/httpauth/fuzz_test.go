package httpauth

import (
	"strings"
	"testing"
	"time"
)

// FuzzCredentialFiles: the keys file and JWKS parsers, and bearer token
// verification, never panic on any input, and an accepted keys file only
// holds entries that passed the checks.
func FuzzCredentialFiles(f *testing.F) {
	f.Add([]byte("keys:\n"+Line("ci", Hash("k"), []string{"text"}, []string{ScopeOperator})+"\n"), "a.b.c")
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AQ","y":"AQ"}]}`), "eyJhbGciOiJub25lIn0.e30.")
	f.Add([]byte(`keys: [{name: "x", sha256: "zz"}]`), "")
	f.Add([]byte("{"), "...")
	f.Fuzz(func(t *testing.T, doc []byte, token string) {
		if keys, err := ParseKeys(doc); err == nil {
			for _, k := range keys {
				if !keyNameRE.MatchString(k.Name) || len(k.SHA256) != 64 {
					t.Fatalf("ParseKeys accepted %+v", k)
				}
			}
		}
		if s, err := ParseJWKS(doc); err == nil {
			if p, err := s.Verify(token, "", "", time.Now()); err == nil && !strings.HasPrefix(p.Name, "jwt:") {
				t.Fatalf("Verify(%q) = %+v", token, p)
			}
		}
	})
}
