package httpauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWKS is a parsed JSON Web Key Set (RFC 7517): the public keys bearer
// tokens are checked against, by key id.
type JWKS struct {
	keys map[string]crypto.PublicKey // kid → key; "" when the set has one key without kid
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// ParseJWKS decodes a JWK Set of RSA, EC (P-256/384/521) and OKP
// (Ed25519) public keys; keys for encryption (use "enc") are skipped.
// Errors name the key at fault.
func ParseJWKS(b []byte) (*JWKS, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("decode JWKS: %w", err)
	}
	s := &JWKS{keys: map[string]crypto.PublicKey{}}
	for i, k := range doc.Keys {
		if k.Use == "enc" {
			continue
		}
		pk, err := k.public()
		if err != nil {
			return nil, fmt.Errorf("keys[%d] (kid %q): %w", i, k.Kid, err)
		}
		if _, dup := s.keys[k.Kid]; dup {
			return nil, fmt.Errorf("keys[%d]: kid %q is used twice", i, k.Kid)
		}
		s.keys[k.Kid] = pk
	}
	if len(s.keys) == 0 {
		return nil, errors.New("JWKS holds no signing key")
	}
	return s, nil
}

func b64(field, s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%s: want unpadded base64url", field)
	}
	return b, nil
}

func (k jwk) public() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		n, err := b64("n", k.N)
		if err != nil {
			return nil, err
		}
		e, err := b64("e", k.E)
		if err != nil {
			return nil, err
		}
		if len(e) > 4 {
			return nil, errors.New("e: exponent too large")
		}
		pk := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pk.N.BitLen() < 2048 {
			return nil, fmt.Errorf("n: RSA keys under 2048 bits are refused (got %d)", pk.N.BitLen())
		}
		return pk, nil
	case "EC":
		var c elliptic.Curve
		switch k.Crv {
		case "P-256":
			c = elliptic.P256()
		case "P-384":
			c = elliptic.P384()
		case "P-521":
			c = elliptic.P521()
		default:
			return nil, fmt.Errorf("crv: unsupported curve %q", k.Crv)
		}
		x, err := b64("x", k.X)
		if err != nil {
			return nil, err
		}
		y, err := b64("y", k.Y)
		if err != nil {
			return nil, err
		}
		size := (c.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return nil, fmt.Errorf("x, y: want %d bytes each for %s", size, k.Crv)
		}
		raw := append(append([]byte{4}, x...), y...)
		pk, err := ecdsa.ParseUncompressedPublicKey(c, raw)
		if err != nil {
			return nil, fmt.Errorf("x, y: %w", err)
		}
		return pk, nil
	case "OKP":
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("crv: unsupported OKP curve %q", k.Crv)
		}
		x, err := b64("x", k.X)
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("x: want %d bytes", ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("kty: unsupported key type %q (want RSA, EC or OKP)", k.Kty)
}

// signing methods accepted per key type: never "none", never HMAC (a
// public key used as an HMAC secret is the classic JWT confusion attack).
func methodsFor(pk crypto.PublicKey) []string {
	switch pk.(type) {
	case *rsa.PublicKey:
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		return []string{"ES256", "ES384", "ES512"}
	case ed25519.PublicKey:
		return []string{"EdDSA"}
	}
	return nil
}

// Claims are the bearer token claims jetserve reads besides the
// registered ones: the applications (ClaimApps) and the space-separated
// OAuth scope (ClaimScope), whose jetserve:operator, jetserve:admin and
// jetserve:admin:read grant the scopes of the same names.
type Claims struct {
	jwt.RegisteredClaims
	Apps  []string `json:"jetserve_apps,omitempty"`
	Scope string   `json:"scope,omitempty"`
}

// Claim names.
const (
	ClaimApps   = "jetserve_apps"
	ClaimScope  = "scope"
	ScopePrefix = "jetserve:"
)

// Verify checks a bearer token's signature against the set (by its kid;
// a token without kid needs a set of one key), its expiry (required), not
// before, and issuer and audience when they are given. It returns the
// principal the token names: "jwt:" + its subject.
func (s *JWKS) Verify(token, issuer, audience string, now time.Time) (Principal, error) {
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(30 * time.Second)}
	if issuer != "" {
		opts = append(opts, jwt.WithIssuer(issuer))
	}
	if audience != "" {
		opts = append(opts, jwt.WithAudience(audience))
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		pk, ok := s.keys[kid]
		if !ok && kid == "" && len(s.keys) == 1 {
			for _, k := range s.keys {
				pk, ok = k, true
			}
		}
		if !ok {
			return nil, fmt.Errorf("no key %q in the JWKS", kid)
		}
		if !slices.Contains(methodsFor(pk), t.Method.Alg()) {
			return nil, fmt.Errorf("algorithm %s does not fit key %q", t.Method.Alg(), kid)
		}
		return pk, nil
	}, opts...)
	if err != nil {
		return Principal{}, err
	}
	if c.Subject == "" {
		return Principal{}, errors.New("token has no subject (sub)")
	}
	p := Principal{Name: "jwt:" + c.Subject, Apps: c.Apps}
	for f := range strings.FieldsSeq(c.Scope) {
		if sc, ok := strings.CutPrefix(f, ScopePrefix); ok && slices.Contains(knownScopes, sc) {
			p.Scopes = append(p.Scopes, sc)
		}
	}
	return p, nil
}
