// Package provenance signs what a service writes for others to obey and
// checks, on the reader's side, who wrote it — defence in depth behind the
// NATS permissions (deploy/auth), which already let only the scheduler
// write assignments.
//
// The writer signs with the nkey of its NATS credentials and attaches its
// user JWT; a reader accepts the document only if that JWT was issued by
// the same account as the reader's own credentials, names the expected
// role ("scheduler"), and its key signed the document. Nothing to
// configure beyond the credentials each service already has: the account
// that issued them is the root of trust. A reader without credentials (the
// dev fleet, no auth) checks nothing.
//
// The signed bytes are the document's JSON with the signature field empty,
// so writer and reader must agree on the type: a field added by a newer
// writer that an older reader drops fails the check (upgrade readers
// first).
package provenance

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Signer signs as the user of a credentials file.
type Signer struct {
	kp      nkeys.KeyPair
	userJWT string
}

// LoadSigner reads a credentials file (a user JWT and its nkey seed).
func LoadSigner(credsPath string) (*Signer, error) {
	b, err := os.ReadFile(credsPath)
	if err != nil {
		return nil, err
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return nil, fmt.Errorf("%s: user JWT: %w", credsPath, err)
	}
	kp, err := jwt.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: nkey seed: %w", credsPath, err)
	}
	return &Signer{kp: kp, userJWT: token}, nil
}

// SignAssignment sets a's WrittenBy (the signer's user JWT) and Signature.
func (s *Signer) SignAssignment(a *protocol.Assignment) error {
	a.WrittenBy, a.Signature = s.userJWT, ""
	msg, err := json.Marshal(a)
	if err != nil {
		return err
	}
	sig, err := s.kp.Sign(msg)
	if err != nil {
		return fmt.Errorf("sign assignment: %w", err)
	}
	a.Signature = base64.RawURLEncoding.EncodeToString(sig)
	return nil
}

// Verifier checks documents against the account that issued the reader's
// own credentials.
type Verifier struct {
	account string // the issuing account's public key
	role    string // the writer's user name
}

// LoadVerifier reads the reader's credentials file and returns a verifier
// that accepts documents written by the user named role of the same
// account.
func LoadVerifier(credsPath, role string) (*Verifier, error) {
	uc, err := userClaims(credsPath)
	if err != nil {
		return nil, err
	}
	return &Verifier{account: issuerAccount(uc), role: role}, nil
}

func issuerAccount(uc *jwt.UserClaims) string {
	if uc.IssuerAccount != "" { // signed by one of the account's signing keys
		return uc.IssuerAccount
	}
	return uc.Issuer
}

// Errors VerifyAssignment wraps.
var (
	ErrUnsigned     = errors.New("unsigned")
	ErrBadWriter    = errors.New("not written by a trusted writer")
	ErrBadSignature = errors.New("signature does not match")
)

// VerifyAssignment checks that a was signed by a user named v's role of
// v's account; it returns that user's public key.
func (v *Verifier) VerifyAssignment(a protocol.Assignment) (string, error) {
	if a.WrittenBy == "" || a.Signature == "" {
		return "", ErrUnsigned
	}
	uc, err := jwt.DecodeUserClaims(a.WrittenBy) // checks the JWT's own signature by its issuer
	if err != nil {
		return "", fmt.Errorf("%w: its JWT: %v", ErrBadWriter, err)
	}
	if acc := issuerAccount(uc); acc != v.account {
		return "", fmt.Errorf("%w: issued by account %s, not ours (%s)", ErrBadWriter, acc, v.account)
	}
	if uc.Name != v.role {
		return "", fmt.Errorf("%w: user %q, want %q", ErrBadWriter, uc.Name, v.role)
	}
	var vr jwt.ValidationResults
	uc.Validate(&vr)
	if vr.IsBlocking(true) {
		return "", fmt.Errorf("%w: its JWT is not valid now (expired?)", ErrBadWriter)
	}
	sig, err := base64.RawURLEncoding.DecodeString(a.Signature)
	if err != nil {
		return "", fmt.Errorf("%w: not base64url", ErrBadSignature)
	}
	pub, err := nkeys.FromPublicKey(uc.Subject)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadWriter, err)
	}
	a.Signature = ""
	msg, err := json.Marshal(a)
	if err != nil {
		return "", err
	}
	if err := pub.Verify(msg, sig); err != nil {
		return "", ErrBadSignature
	}
	return uc.Subject, nil
}

// WorkerTag tags the NATS users of workers (deploy/auth): the shared pool
// user PoolWorker and the per-worker users, each named by its worker id.
// (jwt lowercases tags.)
const WorkerTag = "role:worker"

// PoolWorker is the name of the shared worker user, which any worker id
// may use.
const PoolWorker = "worker"

// OwnWorkerID returns the worker id that the user of a credentials file is
// for: its name when it is a per-worker user (tagged WorkerTag, not
// PoolWorker); "" for any other user.
func OwnWorkerID(credsPath string) (string, error) {
	uc, err := userClaims(credsPath)
	if err != nil {
		return "", err
	}
	return workerIDOf(uc), nil
}

// workerIDOf is the worker id of a per-worker user, "" for any other.
func workerIDOf(uc *jwt.UserClaims) string {
	if uc.Name == PoolWorker || !uc.Tags.Contains(WorkerTag) {
		return ""
	}
	return uc.Name
}

func userClaims(credsPath string) (*jwt.UserClaims, error) {
	b, err := os.ReadFile(credsPath)
	if err != nil {
		return nil, err
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return nil, fmt.Errorf("%s: user JWT: %w", credsPath, err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, fmt.Errorf("%s: decode the user JWT: %w", credsPath, err)
	}
	return uc, nil
}
