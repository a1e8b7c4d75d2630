// Package provenance signs what a service writes for others to trust and
// checks, on the reader's side, who wrote it — defence in depth behind the
// NATS permissions (deploy/auth), which already let only the scheduler
// write assignments and, with a user per worker, only a worker its own
// registration and replica records.
//
// The writer signs with the nkey of its NATS credentials. An assignment
// and a worker's registration carry the writer's user JWT; a replica
// record carries only the signer's public key (a JWT is several KiB and
// records are rewritten every heartbeat), which readers find in the
// verified registration of the worker the record names (Replicas). A
// reader accepts a document only if the JWT was issued by the same account
// as the reader's own credentials and names the expected writer: the user
// "scheduler" for assignments; a worker user (tagged WorkerTag: the pool
// user, or the per-worker user of the very worker id) for registrations.
// Nothing to configure beyond the credentials each service already has:
// the account that issued them is the root of trust. A reader without
// credentials (the dev fleet, no auth) checks nothing.
//
// The signed bytes are the document's JSON with the signature field empty,
// so writer and reader must agree on the type: a field added by a newer
// writer that an older reader drops fails the check (upgrade readers
// first).
package provenance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Signer signs as the user of a credentials file.
type Signer struct {
	kp      nkeys.KeyPair
	pub     string // the user's public key
	userJWT string
}

// LoadSigner reads a credentials file (a user JWT and its nkey seed).
func LoadSigner(credsPath string) (*Signer, error) {
	b, token, err := readCreds(credsPath)
	if err != nil {
		return nil, err
	}
	kp, err := jwt.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: nkey seed: %w", credsPath, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%s: nkey: %w", credsPath, err)
	}
	return &Signer{kp: kp, pub: pub, userJWT: token}, nil
}

// SignAssignment sets a's WrittenBy (the signer's user JWT) and Signature.
func (s *Signer) SignAssignment(a *protocol.Assignment) error {
	a.WrittenBy, a.Signature = s.userJWT, ""
	sig, err := s.sign(a)
	a.Signature = sig
	return err
}

// SignWorker sets w's WrittenBy (the signer's user JWT) and Signature.
func (s *Signer) SignWorker(w *protocol.WorkerInfo) error {
	w.WrittenBy, w.Signature = s.userJWT, ""
	sig, err := s.sign(w)
	w.Signature = sig
	return err
}

// SignReplica sets r's Signer (the signer's public key, not its JWT:
// readers take that from the worker's registration) and Signature.
func (s *Signer) SignReplica(r *protocol.ReplicaInfo) error {
	r.Signer, r.Signature = s.pub, ""
	sig, err := s.sign(r)
	r.Signature = sig
	return err
}

// sign returns the signature of doc's JSON (its Signature field empty).
func (s *Signer) sign(doc any) (string, error) {
	msg, err := json.Marshal(doc)
	if err != nil {
		return "", err
	}
	sig, err := s.kp.Sign(msg)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sig), nil
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
	uc, err := v.writer(a.WrittenBy)
	if err != nil {
		return "", err
	}
	if uc.Name != v.role {
		return "", fmt.Errorf("%w: user %q, want %q", ErrBadWriter, uc.Name, v.role)
	}
	sig := a.Signature
	a.Signature = ""
	if err := verify(uc.Subject, sig, a); err != nil {
		return "", err
	}
	return uc.Subject, nil
}

// VerifyWorker checks that w was signed by a worker user of v's account
// (whatever v's role): the pool user PoolWorker, or the per-worker user of
// w.ID itself. It returns that user's public key, which signs the worker's
// replica records.
func (v *Verifier) VerifyWorker(w protocol.WorkerInfo) (string, error) {
	if w.WrittenBy == "" || w.Signature == "" {
		return "", ErrUnsigned
	}
	uc, err := v.writer(w.WrittenBy)
	if err != nil {
		return "", err
	}
	switch own := workerIDOf(uc); {
	case own == "" && uc.Name != PoolWorker:
		return "", fmt.Errorf("%w: user %q is no worker's", ErrBadWriter, uc.Name)
	case own != "" && own != w.ID:
		return "", fmt.Errorf("%w: worker %q's user signed the registration of %q", ErrBadWriter, own, w.ID)
	}
	sig := w.Signature
	w.Signature = ""
	if err := verify(uc.Subject, sig, w); err != nil {
		return "", err
	}
	return uc.Subject, nil
}

// VerifyReplica checks that r was signed by signer, the public key of the
// verified registration (VerifyWorker) of the worker r names.
func VerifyReplica(r protocol.ReplicaInfo, signer string) error {
	if r.Signer == "" || r.Signature == "" {
		return ErrUnsigned
	}
	if r.Signer != signer {
		return fmt.Errorf("%w: signed by %s, not by worker %q's user %s", ErrBadWriter, r.Signer, r.WorkerID, signer)
	}
	sig := r.Signature
	r.Signature = ""
	return verify(signer, sig, r)
}

// Replicas checks replica records against the registrations of the
// workers they name: it reads (Lookup) and verifies a worker's
// registration the first time it meets the worker or a new signer for it,
// and keeps the verified key. Safe for concurrent use.
type Replicas struct {
	v      *Verifier
	lookup func(ctx context.Context, workerID string) (protocol.WorkerInfo, error)

	mu      sync.Mutex
	signers map[string]string // guarded by mu: worker id → its verified registration's key
}

// NewReplicas returns a checker that verifies registrations with v and
// reads them with lookup.
func NewReplicas(v *Verifier, lookup func(ctx context.Context, workerID string) (protocol.WorkerInfo, error)) *Replicas {
	return &Replicas{v: v, lookup: lookup, signers: map[string]string{}}
}

// Check reports a replica record that the user of its worker's verified
// registration did not sign.
func (c *Replicas) Check(ctx context.Context, r protocol.ReplicaInfo) error {
	c.mu.Lock()
	pub, ok := c.signers[r.WorkerID]
	c.mu.Unlock()
	if !ok || (r.Signer != "" && pub != r.Signer) { // a new worker, or new credentials
		w, err := c.lookup(ctx, r.WorkerID)
		if err != nil {
			return fmt.Errorf("registration of worker %q: %w", r.WorkerID, err)
		}
		if w.ID != r.WorkerID {
			return fmt.Errorf("%w: the registration read for worker %q is %q's", ErrBadWriter, r.WorkerID, w.ID)
		}
		if pub, err = c.v.VerifyWorker(w); err != nil {
			return fmt.Errorf("registration of worker %q: %w", r.WorkerID, err)
		}
		c.mu.Lock()
		c.signers[r.WorkerID] = pub
		c.mu.Unlock()
	}
	return VerifyReplica(r, pub)
}

// writer decodes a writer's user JWT (checking its signature by its
// issuer) and checks that v's account issued it and that it is valid now.
func (v *Verifier) writer(token string) (*jwt.UserClaims, error) {
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, fmt.Errorf("%w: its JWT: %v", ErrBadWriter, err)
	}
	if acc := issuerAccount(uc); acc != v.account {
		return nil, fmt.Errorf("%w: issued by account %s, not ours (%s)", ErrBadWriter, acc, v.account)
	}
	var vr jwt.ValidationResults
	uc.Validate(&vr)
	if vr.IsBlocking(true) {
		return nil, fmt.Errorf("%w: its JWT is not valid now (expired?)", ErrBadWriter)
	}
	return uc, nil
}

// verify checks sig (base64url), by the user key pub, of doc's JSON
// (doc's Signature field already empty).
func verify(pub, sig string, doc any) error {
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: not base64url", ErrBadSignature)
	}
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadWriter, err)
	}
	msg, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	if err := kp.Verify(msg, raw); err != nil {
		return ErrBadSignature
	}
	return nil
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

// readCreds reads a credentials file: its bytes and its user JWT.
func readCreds(credsPath string) ([]byte, string, error) {
	b, err := os.ReadFile(credsPath)
	if err != nil {
		return nil, "", err
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return nil, "", fmt.Errorf("%s: user JWT: %w", credsPath, err)
	}
	return b, token, nil
}

func userClaims(credsPath string) (*jwt.UserClaims, error) {
	_, token, err := readCreds(credsPath)
	if err != nil {
		return nil, err
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, fmt.Errorf("%s: decode the user JWT: %w", credsPath, err)
	}
	return uc, nil
}

// LoadReplicas returns the checker of replica records for a reader with
// the credentials credsPath (its account is the root of trust), reading
// registrations with lookup; nil without credentials (the dev fleet: no
// check).
func LoadReplicas(credsPath string, lookup func(ctx context.Context, workerID string) (protocol.WorkerInfo, error)) (*Replicas, error) {
	if credsPath == "" {
		return nil, nil
	}
	v, err := LoadVerifier(credsPath, "")
	if err != nil {
		return nil, err
	}
	return NewReplicas(v, lookup), nil
}

// Verifier returns the verifier c checks registrations with.
func (c *Replicas) Verifier() *Verifier { return c.v }
