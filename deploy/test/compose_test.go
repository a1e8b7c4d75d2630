package test

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"
)

const repoRoot = "../.."

// composeService is the part of a compose service the checks read.
type composeService struct {
	Image       string            `json:"image"`
	Entrypoint  []string          `json:"entrypoint"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Volumes     []string          `json:"volumes"`
}

// composeVar is compose's ${VAR:-default}.
var composeVar = regexp.MustCompile(`\$\{([A-Z0-9_]+):-([^}]*)\}`)

// loadCompose reads a compose file (anchors and merge keys resolved) with
// its variables at their defaults, but SERVE_SECRETS at secrets.
func loadCompose(t *testing.T, file, secrets string) map[string]composeService {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, file))
	if err != nil {
		t.Fatal(err)
	}
	b = composeVar.ReplaceAllFunc(b, func(m []byte) []byte {
		sub := composeVar.FindSubmatch(m)
		if string(sub[1]) == "SERVE_SECRETS" {
			return []byte(secrets)
		}
		return sub[2]
	})
	var f struct {
		Services map[string]composeService `json:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return f.Services
}

// hostPath maps a path inside a service's container to the host through
// its bind mounts (the longest matching target), "" if none.
func hostPath(s composeService, p string) string {
	best, host := "", ""
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			continue
		}
		src, dst := parts[0], parts[1]
		if !strings.HasPrefix(src, "/") && !strings.HasPrefix(src, ".") {
			continue // a named volume
		}
		if (p == dst || strings.HasPrefix(p, dst+"/")) && len(dst) > len(best) {
			best = dst
			if !filepath.IsAbs(src) {
				src = filepath.Join(repoRoot, src)
			}
			host = filepath.Join(src, strings.TrimPrefix(p, dst))
		}
	}
	return host
}

// arg returns the value after flag in args.
func arg(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// Both compose profiles run with auth, as their auth-init writes it:
// each service's environment names its own role's credentials (and keys
// files) inside the shared secrets directory and is accepted by the
// service's own option loader — a non-loopback HTTP address needs the keys
// file, which the control below shows — and the NATS servers load their
// configuration over the generated files in operator mode, the HA
// profile's nodes with the route credential and routes to each other.
func TestComposeProfilesAuth(t *testing.T) {
	for _, tc := range []struct {
		file    string
		cluster bool
	}{
		{"docker-compose.yml", false},
		{"docker-compose.ha.yml", true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			secrets := t.TempDir()
			svcs := loadCompose(t, tc.file, secrets)

			// auth-init, as the file runs it.
			gen, ok := svcs["auth-init"]
			if !ok || gen.Image != "jetserve/auth:dev" || arg(gen.Command, "--out") != "/secrets" || hostPath(gen, "/secrets") != secrets {
				t.Fatalf("auth-init %+v, want jetserve/auth:dev writing /secrets, the mounted SERVE_SECRETS", gen)
			}
			var routes []string
			if r := arg(gen.Command, "--routes"); r != "" {
				routes = strings.Split(r, ",")
			}
			var workers []string
			if w := arg(gen.Command, "--workers"); w != "" {
				workers = strings.Split(w, ",")
			}
			g, err := auth.Generate(auth.Options{Dir: secrets, Prefix: "jetserve", Routes: routes, Workers: workers})
			if err != nil {
				t.Fatalf("auth-init's arguments: %v", err)
			}

			var natsNodes []string
			for name, s := range svcs {
				if s.Image == "jetserve/nats:dev" {
					natsNodes = append(natsNodes, name)
				}
			}
			slices.Sort(natsNodes)
			if want := map[bool]int{false: 1, true: 3}[tc.cluster]; len(natsNodes) != want {
				t.Fatalf("NATS services %v, want %d", natsNodes, want)
			}
			if tc.cluster {
				var want []string
				for _, n := range natsNodes {
					want = append(want, n+":6222")
				}
				if !slices.Equal(routes, want) {
					t.Errorf("auth-init --routes %v, want every node's route address %v", routes, want)
				}
			}
			for _, name := range natsNodes {
				checkNATSNode(t, name, svcs[name], g, routes)
			}

			roles := map[string]int{}
			for name, s := range svcs {
				role, ok := strings.CutSuffix(strings.TrimPrefix(s.Image, "jetserve/"), ":dev")
				if _, known := services[role]; !ok || !known {
					continue
				}
				roles[role]++
				checkComposeService(t, name, role, s, g, secrets)
				// The HA profile's workers are named: each has a user of
				// its own (docker-compose.yml's is scaled with --scale,
				// whose replicas share one environment: the pool user).
				if _, own := g.Workers[s.Environment["JETSERVE_ID"]]; tc.cluster && role == auth.Worker && !own {
					t.Errorf("%s: worker %q has no NATS user of its own (auth-init --workers %v)", name, s.Environment["JETSERVE_ID"], workers)
				}
			}
			for role := range services {
				if roles[role] == 0 {
					t.Errorf("no %s service", role)
				}
			}
			deployer := svcs["deployer"]
			if got := hostPath(deployer, deployer.Environment["JETSERVE_ADMIN_KEY_FILE"]); got != filepath.Join(secrets, auth.AdminKeyFile) {
				t.Errorf("deployer: JETSERVE_ADMIN_KEY_FILE %q is %q on the host, want the generated %s", deployer.Environment["JETSERVE_ADMIN_KEY_FILE"], got, auth.AdminKeyFile)
			}
		})
	}
}

func checkComposeService(t *testing.T, name, role string, s composeService, g *auth.Generated, secrets string) {
	t.Helper()
	files := map[string]string{"JETSERVE_NATS_CREDS": g.Creds[role]}
	switch role {
	case auth.Worker:
		files["JETSERVE_DEPLOYMENT_CREDS"] = g.Creds[auth.Deployment]
		if own, ok := g.Workers[s.Environment["JETSERVE_ID"]]; ok {
			files["JETSERVE_NATS_CREDS"] = own
		}
	case auth.Ingress:
		files["JETSERVE_AUTH_KEYS_FILE"] = filepath.Join(secrets, auth.IngressKeys)
	case auth.Scheduler:
		files["JETSERVE_AUTH_KEYS_FILE"] = filepath.Join(secrets, auth.AdminKeys)
	}
	env := []string{}
	for k, v := range s.Environment {
		if want, ok := files[k]; ok {
			if got := hostPath(s, v); got != want {
				t.Errorf("%s: %s=%s is %q on the host, want %s's %s", name, k, v, got, role, want)
			}
		}
		if h := hostPath(s, v); h != "" { // the service reads it: give it the host's file
			v = h
		}
		env = append(env, k+"="+v)
	}
	for k := range files {
		if _, ok := s.Environment[k]; !ok {
			t.Errorf("%s: no %s", name, k)
		}
	}
	if _, _, err := services[role].load(env); err != nil {
		t.Errorf("%s: jetserve-%s refuses its environment: %v", name, role, err)
	}
	// The control: without its keys file, a public server refuses to start.
	if _, ok := files["JETSERVE_AUTH_KEYS_FILE"]; ok {
		without := slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, "JETSERVE_AUTH_KEYS_FILE=") })
		if _, _, err := services[role].load(without); err == nil {
			t.Errorf("%s: jetserve-%s accepts its environment without JETSERVE_AUTH_KEYS_FILE; the check above proves nothing", name, role)
		}
	}
}

// checkNATSNode loads a NATS service's configuration file as the container
// sees it: the file and the secrets directory at their mount points.
func checkNATSNode(t *testing.T, name string, s composeService, g *auth.Generated, routes []string) {
	t.Helper()
	args := append(slices.Clone(s.Entrypoint), s.Command...)
	conf := arg(args, "-c")
	if conf == "" {
		t.Fatalf("%s: no -c CONFIG in %v", name, args)
	}
	root := t.TempDir()
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[1], path.Dir(conf)) {
			continue
		}
		src := hostPath(s, parts[1])
		copyTree(t, src, filepath.Join(root, parts[1]))
	}
	for k, v := range s.Environment {
		t.Setenv(k, v) // NATS_SERVER_NAME
	}
	opts, err := server.ProcessConfigFile(filepath.Join(root, conf))
	if err != nil {
		t.Fatalf("%s: %s over the generated files: %v", name, conf, err)
	}
	opts.NoSigs = true
	opts.StoreDir = t.TempDir()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer ns.Shutdown()
	if len(opts.TrustedOperators) != 1 || opts.TrustedOperators[0].Subject != g.OperatorPub || opts.SystemAccount != g.SystemPub {
		t.Errorf("%s: not in operator mode with the generated operator and system account (%d operators, system account %q)", name, len(opts.TrustedOperators), opts.SystemAccount)
	}
	if opts.NoAuthUser != "" || len(opts.Users) > 0 || len(opts.Nkeys) > 0 {
		t.Errorf("%s: users beside the operator's accounts (no_auth_user %q, %d users)", name, opts.NoAuthUser, len(opts.Users))
	}
	if _, err := opts.AccountResolver.Fetch(g.AccountPub); err != nil {
		t.Errorf("%s: the resolver lacks the account %s: %v", name, auth.AccountName, err)
	}
	if routes == nil {
		return
	}
	if opts.Cluster.Username != auth.RouteUser || opts.Cluster.Password == "" {
		t.Errorf("%s: cluster authorization user %q, want %q with a password", name, opts.Cluster.Username, auth.RouteUser)
	}
	var got []string
	for _, u := range opts.Routes {
		if p, _ := u.User.Password(); p != opts.Cluster.Password {
			t.Errorf("%s: route %s lacks the route credential", name, u.Redacted())
		}
		got = append(got, u.Host)
	}
	if !slices.Equal(got, routes) {
		t.Errorf("%s: routes to %v, want %v", name, got, routes)
	}
}

// copyTree copies a file or directory.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
