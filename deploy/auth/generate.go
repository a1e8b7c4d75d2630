package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jetserve/jetserve/pkg/httpauth"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Options say what to generate.
type Options struct {
	// Dir receives everything (see Generate).
	Dir string
	// Prefix is the fleet's nats.prefix.
	Prefix string
	// Force regenerates everything: a new operator, account, users and
	// keys (every credential given out before stops working).
	Force bool
	// Revoke adds user public keys (U…, the "sub" of a creds file's JWT)
	// to the account's revocations, kept in nats/revoked; nats-server
	// refuses them once it reloads auth.conf.
	Revoke []string
	// Workers are worker ids, each given a user of its own
	// (WorkerPermissions) in creds/workers/<id>.creds: the worker with
	// that id reads only its assignment and writes only its registration
	// and replicas' records. The shared pool user (creds/worker.creds),
	// which any worker id may use, is generated too.
	Workers []string
	// Routes are the route addresses (HOST:PORT) of every node of a NATS
	// cluster: Generate then writes RoutesConf, the routes' credential
	// and the routes to these nodes. Empty keeps an existing RoutesConf.
	Routes []string
}

// Layout of the output directory.
const (
	AuthConf      = "nats/auth.conf"         // include it in nats-server's config
	CredsDir      = "creds"                  // <role>.creds, sys.creds
	WorkerCreds   = "creds/workers"          // <worker id>.creds: per-worker users
	SeedsDir      = "seeds"                  // operator.nk, account.nk, sys.nk (0600; keep them off the servers)
	IngressKeys   = "http/ingress-keys.yaml" // the ingress's auth.keys_file
	AdminKeys     = "http/admin-keys.yaml"   // the scheduler's auth.keys_file
	HTTPKeysEnv   = "http/keys.env"          // JETSERVE_API_KEY, JETSERVE_ADMIN_KEY (the CLI's, the smoke test's)
	APIKeyFile    = "http/api.key"           // the ingress key alone (JETSERVE_API_KEY_FILE)
	AdminKeyFile  = "http/admin.key"         // the admin key alone (JETSERVE_ADMIN_KEY_FILE)
	AccountName   = "JETSERVE"
	SystemAccount = "SYS"
)

// Generated is what Generate wrote.
type Generated struct {
	OperatorPub, AccountPub, SystemPub string
	// Creds maps a role to its credentials file.
	Creds map[string]string
	// Workers maps a worker id (Options.Workers) to its credentials file.
	Workers map[string]string
	// APIKey and AdminKey are the plaintext HTTP keys (also in keys.env);
	// empty when the files existed and were kept.
	APIKey, AdminKey string
	// RoutesConf is the path of the cluster routes' file, written when
	// Options.Routes is set.
	RoutesConf string
}

// Generate writes, under o.Dir:
//
//	nats/auth.conf       operator JWT, system account, memory resolver preloaded with both accounts
//	seeds/*.nk           the operator's and accounts' seeds (to issue more users later)
//	creds/<role>.creds   one user per role (Services, deployment, operator) and sys
//	http/ingress-keys.yaml, http/admin-keys.yaml, http/keys.env
//	nats/routes.conf     with o.Routes: a cluster's route credential and routes (RoutesConf)
//
// An existing directory is completed, never overwritten — the same
// operator and account, existing users and keys kept — unless o.Force.
func Generate(o Options) (*Generated, error) {
	names, err := protocol.NewNames(o.Prefix)
	if err != nil {
		return nil, err
	}
	if err := checkRoutes(o.Routes); err != nil {
		return nil, err
	}
	for _, id := range o.Workers {
		if err := CheckWorkerID(id); err != nil {
			return nil, err
		}
	}
	if o.Force {
		for _, d := range []string{"nats", CredsDir, SeedsDir, "http"} {
			if err := os.RemoveAll(filepath.Join(o.Dir, d)); err != nil {
				return nil, err
			}
		}
	}
	for _, d := range []string{"nats", CredsDir, WorkerCreds, SeedsDir, "http"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	okp, err := seed(o.Dir, "operator", nkeys.CreateOperator)
	if err != nil {
		return nil, err
	}
	akp, err := seed(o.Dir, "account", nkeys.CreateAccount)
	if err != nil {
		return nil, err
	}
	skp, err := seed(o.Dir, "sys", nkeys.CreateAccount)
	if err != nil {
		return nil, err
	}
	g := &Generated{Creds: map[string]string{}, Workers: map[string]string{}}
	g.OperatorPub, _ = okp.PublicKey()
	g.AccountPub, _ = akp.PublicKey()
	g.SystemPub, _ = skp.PublicKey()

	ojwt, err := operatorJWT(o.Dir, okp, g.OperatorPub, g.SystemPub)
	if err != nil {
		return nil, err
	}
	sc := jwt.NewAccountClaims(g.SystemPub)
	sc.Name = SystemAccount
	sjwt, err := sc.Encode(okp)
	if err != nil {
		return nil, fmt.Errorf("encode system account: %w", err)
	}
	revoked, err := revocations(o.Dir, o.Revoke)
	if err != nil {
		return nil, err
	}
	ac := jwt.NewAccountClaims(g.AccountPub)
	ac.Name = AccountName
	for _, pub := range revoked {
		ac.Revoke(pub)
	}
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1,
		MaxAckPending: -1, MemoryMaxStreamBytes: -1, DiskMaxStreamBytes: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		return nil, fmt.Errorf("encode account: %w", err)
	}
	conf := fmt.Sprintf(`# jetserve NATS auth (deploy/auth): decentralised JWT, operator %q.
# Include it from nats-server's configuration. Generated; do not edit:
# re-run the generator (it keeps the operator, the accounts and the users).
# A user's JWT carries its permissions in the CONNECT line: allow more
# than the default 4 KiB for it.
max_control_line: 64KB
operator: %s
system_account: %s
resolver: MEMORY
resolver_preload: {
  # %s
  %s: %s
  # %s
  %s: %s
}
`, "jetserve", ojwt, g.SystemPub, SystemAccount, g.SystemPub, sjwt, AccountName, g.AccountPub, ajwt)
	if err := write(filepath.Join(o.Dir, AuthConf), []byte(conf), 0o644, true); err != nil {
		return nil, err
	}
	if len(o.Routes) > 0 {
		if g.RoutesConf, err = writeRoutes(o.Dir, okp, o.Routes); err != nil {
			return nil, err
		}
	}

	roles := append(append([]string(nil), Services...), Deployment, Operator)
	for _, role := range roles {
		perms, err := Permissions(names, role)
		if err != nil {
			return nil, err
		}
		var tags []string
		if role == Worker { // readers of worker records check it (provenance)
			tags = append(tags, provenance.WorkerTag)
		}
		path, err := User(o.Dir, akp, role, perms, tags...)
		if err != nil {
			return nil, err
		}
		g.Creds[role] = path
	}
	for _, id := range o.Workers {
		perms, err := WorkerPermissions(names, id)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(o.Dir, WorkerCreds, id+".creds")
		if err := writeUser(path, akp, id, perms, provenance.WorkerTag); err != nil {
			return nil, err
		}
		g.Workers[id] = path
	}
	sysUser, err := userCreds(skp, "sys", jwt.Permissions{})
	if err != nil {
		return nil, err
	}
	g.Creds["sys"] = filepath.Join(o.Dir, CredsDir, "sys.creds")
	if err := write(g.Creds["sys"], sysUser, 0o600, false); err != nil {
		return nil, err
	}

	if err := httpKeys(o.Dir, g); err != nil {
		return nil, err
	}
	return g, nil
}

// RevokedFile lists the revoked users' public keys, one a line.
const RevokedFile = "nats/revoked"

// revocations returns the revoked users: those of RevokedFile and add
// (checked, then written back).
// operatorJWT returns the operator JWT already in the auth config when it
// is this operator's with this system account, and a newly signed one
// otherwise. A re-run (to revoke or add users) must keep it byte for
// byte: nats-server cannot reload a changed operator, and a new
// signature carries a new issue time.
func operatorJWT(dir string, okp nkeys.KeyPair, operatorPub, systemPub string) (string, error) {
	if b, err := os.ReadFile(filepath.Join(dir, AuthConf)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			token, ok := strings.CutPrefix(line, "operator: ")
			if !ok {
				continue
			}
			if oc, err := jwt.DecodeOperatorClaims(strings.TrimSpace(token)); err == nil &&
				oc.Subject == operatorPub && oc.SystemAccount == systemPub {
				return strings.TrimSpace(token), nil
			}
		}
	}
	oc := jwt.NewOperatorClaims(operatorPub)
	oc.Name = "jetserve"
	oc.SystemAccount = systemPub
	ojwt, err := oc.Encode(okp)
	if err != nil {
		return "", fmt.Errorf("encode operator: %w", err)
	}
	return ojwt, nil
}

func revocations(dir string, add []string) ([]string, error) {
	path := filepath.Join(dir, RevokedFile)
	var out []string
	if b, err := os.ReadFile(path); err == nil {
		out = strings.Fields(string(b))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, pub := range add {
		if !nkeys.IsValidPublicUserKey(pub) {
			return nil, fmt.Errorf("revoke %q: not a user public key (U…: the sub of the creds file's JWT)", pub)
		}
		if !slices.Contains(out, pub) {
			out = append(out, pub)
		}
	}
	if len(add) > 0 {
		if err := write(path, []byte(strings.Join(out, "\n")+"\n"), 0o644, true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// User writes creds/<name>.creds for a user of the account akp with
// perms, unless it exists; it returns the path.
func User(dir string, akp nkeys.KeyPair, name string, perms jwt.Permissions, tags ...string) (string, error) {
	path := filepath.Join(dir, CredsDir, name+".creds")
	return path, writeUser(path, akp, name, perms, tags...)
}

// writeUser writes path, the credentials of a new user name of the
// account akp with perms, unless it exists.
func writeUser(path string, akp nkeys.KeyPair, name string, perms jwt.Permissions, tags ...string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	b, err := userCreds(akp, name, perms, tags...)
	if err != nil {
		return err
	}
	return write(path, b, 0o600, false)
}

func userCreds(akp nkeys.KeyPair, name string, perms jwt.Permissions, tags ...string) ([]byte, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	uc.Permissions = perms
	uc.Tags.Add(tags...)
	ujwt, err := uc.Encode(akp)
	if err != nil {
		return nil, fmt.Errorf("encode user %s: %w", name, err)
	}
	b, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		return nil, fmt.Errorf("format creds %s: %w", name, err)
	}
	return b, nil
}

// seed loads seeds/<name>.nk or creates it.
func seed(dir, name string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	path := filepath.Join(dir, SeedsDir, name+".nk")
	if b, err := os.ReadFile(path); err == nil {
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return kp, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	kp, err := create()
	if err != nil {
		return nil, err
	}
	s, _ := kp.Seed()
	return kp, write(path, append(s, '\n'), 0o600, false)
}

// httpKeys writes one ingress key (every application, operator scope: the
// compose deployer's and smoke test's) and one admin key, unless the files
// exist.
func httpKeys(dir string, g *Generated) error {
	env := filepath.Join(dir, HTTPKeysEnv)
	if _, err := os.Stat(env); err == nil {
		return nil
	}
	api, apiSHA, err := httpauth.NewKey()
	if err != nil {
		return err
	}
	adm, admSHA, err := httpauth.NewKey()
	if err != nil {
		return err
	}
	g.APIKey, g.AdminKey = api, adm
	files := map[string]string{
		IngressKeys: "# The ingress's API keys (auth.keys_file): SHA-256 only. Add one: jetserve keys new --name NAME --apps APP\nkeys:\n" +
			httpauth.Line("default", apiSHA, []string{httpauth.AllApps}, []string{httpauth.ScopeOperator}) + "\n",
		AdminKeys: "# The admin API's keys (the scheduler's auth.keys_file). Add one: jetserve keys new --name NAME --admin\nkeys:\n" +
			httpauth.Line("admin", admSHA, nil, []string{httpauth.ScopeAdmin}) + "\n",
		APIKeyFile:   api + "\n",
		AdminKeyFile: adm + "\n",
		HTTPKeysEnv: "# Plaintext keys (shown once; keep this file secret). The CLI reads JETSERVE_API_KEY and JETSERVE_ADMIN_KEY.\n" +
			"JETSERVE_API_KEY=" + api + "\nJETSERVE_ADMIN_KEY=" + adm + "\n",
	}
	paths := slices.Sorted(maps.Keys(files)) // keys.env last: it marks the set complete
	for _, p := range paths {
		mode := os.FileMode(0o644) // hashes only
		if strings.HasSuffix(p, ".key") || p == HTTPKeysEnv {
			mode = 0o600
		}
		if err := write(filepath.Join(dir, p), []byte(files[p]), mode, true); err != nil {
			return err
		}
	}
	return nil
}

func write(path string, b []byte, mode os.FileMode, replace bool) error {
	if !replace {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
