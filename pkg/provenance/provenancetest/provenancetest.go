// Package provenancetest writes NATS credentials files for tests of
// signed documents (pkg/provenance), without a NATS server.
package provenancetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Creds writes, in a temp dir, the credentials file (user JWT and nkey
// seed) of a new user named name (with tags, if any), issued by the
// account akp, and returns its path.
func Creds(tb testing.TB, akp nkeys.KeyPair, name string, tags ...string) string {
	tb.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatal(err)
	}
	upub, err := ukp.PublicKey()
	if err != nil {
		tb.Fatal(err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		tb.Fatal(err)
	}
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	uc.Tags.Add(tags...)
	token, err := uc.Encode(akp)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(tb.TempDir(), name+".creds")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
