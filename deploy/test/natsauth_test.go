package test

import (
	"encoding/json"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
)

// The NATS chart (1.x) as nats-values.yaml uses it, for `helm install nats`:
// the server reads /etc/nats-config/nats.conf, and a cluster of 3 has the
// routes below.
const (
	chartConfigDir = "/etc/nats-config"
	authSecret     = "jetserve-auth"
)

var chartRoutes = []string{"nats-0.nats-headless:6222", "nats-1.nats-headless:6222", "nats-2.nats-headless:6222"}

// secretKey is the jetserve-auth Secret's key of a file of deploy/auth's
// output, as README (Kubernetes) creates it: the first / becomes _.
func secretKey(file string) string { return strings.Replace(file, "/", "_", 1) }

// chartInclude is how the chart renders a key ending in $include.
var chartInclude = regexp.MustCompile(`".*\$include": "(.*)",?`)

// nats-values.yaml puts the chart's servers in operator mode from the
// jetserve-auth Secret: it mounts only the Secret's nats-server files, the
// chart's includes resolve to them, and a server configured as the chart
// renders it, over deploy/auth's real output, trusts the generated
// operator and system account, preloads both accounts, requires the route
// credential and routes to the chart's three pods with it; nats-box uses the
// operator's and the sys user's credentials from the same Secret.
func TestNATSChartValuesLoadTheAuthSecret(t *testing.T) {
	v := loadNATSValues(t)

	var vol *corev1.Volume
	for _, op := range v.PodTemplate.Patch {
		var pv corev1.Volume
		strict(t, "nats-values.yaml podTemplate.patch", op.Value, &pv)
		if op.Op == "add" && op.Path == "/spec/volumes/-" && pv.Secret != nil && pv.Secret.SecretName == authSecret {
			vol = &pv
		}
	}
	if vol == nil {
		t.Fatalf("podTemplate.patch adds no volume of the Secret %s", authSecret)
	}
	var mount *corev1.VolumeMount
	for _, op := range v.Container.Patch {
		var m corev1.VolumeMount
		strict(t, "nats-values.yaml container.patch", op.Value, &m)
		if op.Op == "add" && op.Path == "/volumeMounts/-" && m.Name == vol.Name {
			mount = &m
		}
	}
	if mount == nil || !mount.ReadOnly {
		t.Fatalf("container.patch mounts the volume %s as %+v, want a read-only mount", vol.Name, mount)
	}
	// Only nats-server's files: a NATS pod holds no client credentials.
	items := map[string]string{} // Secret key → file under the mount
	for _, it := range vol.Secret.Items {
		items[it.Key] = it.Path
	}
	want := map[string]string{secretKey(auth.AuthConf): "", secretKey(auth.RoutesConf): ""}
	for k := range items {
		if _, ok := want[k]; !ok {
			t.Errorf("the NATS pods mount %s's key %s; want only %v", authSecret, k, slices.Sorted(maps.Keys(want)))
		}
	}
	// The chart's includes name the mounted files.
	for _, inc := range []struct{ where, value, file string }{
		{"config.merge.$include", v.Config.Merge.Include, auth.AuthConf},
		{"config.cluster.merge.zzz$include", v.Config.Cluster.Merge.IncludeLast, auth.RoutesConf},
	} {
		item, ok := items[secretKey(inc.file)]
		if !ok {
			t.Errorf("the volume %s lacks the Secret key %s (deploy/auth's %s)", vol.Name, secretKey(inc.file), inc.file)
			continue
		}
		if got, want := path.Join(chartConfigDir, inc.value), path.Join(mount.MountPath, item); got != want {
			t.Errorf("%s %q is %s from the chart's %s, want the mounted %s", inc.where, inc.value, got, chartConfigDir, want)
		}
	}
	if t.Failed() {
		return
	}

	// deploy/auth's output, as the values' header says to generate it.
	raw, err := os.ReadFile(filepath.Join(k8sDir, "nats-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if flag := "--routes " + strings.Join(chartRoutes, ","); !strings.Contains(string(raw), flag) {
		t.Errorf("nats-values.yaml does not say to generate the Secret with %s", flag)
	}
	out := t.TempDir()
	g, err := auth.Generate(auth.Options{Dir: out, Prefix: "jetserve", Routes: chartRoutes})
	if err != nil {
		t.Fatal(err)
	}
	// A pod's filesystem: the Secret's items under the mount, and the
	// chart's nats.conf (its cluster block and the values' merges, rendered
	// as the chart does: sorted JSON, $include keys turned into includes).
	root := t.TempDir()
	for key, item := range items {
		b, err := os.ReadFile(filepath.Join(out, strings.Replace(key, "_", "/", 1)))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, mount.MountPath, item), b)
	}
	var routes []any
	for _, r := range chartRoutes {
		routes = append(routes, "nats://"+r)
	}
	conf := map[string]any{
		"server_name": "nats-0", // the chart: $SERVER_NAME, the pod name
		"port":        4222,
		"http_port":   v.Config.Monitor.Port,
		"jetstream":   map[string]any{"store_dir": filepath.Join(root, "data")},
		"max_payload": v.Config.Merge.MaxPayload,
		"$include":    v.Config.Merge.Include,
		"cluster": map[string]any{
			"name": "nats", "port": 6222, "no_advertise": true, "routes": routes,
			"zzz$include": v.Config.Cluster.Merge.IncludeLast,
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	rendered := chartInclude.ReplaceAllString(string(b), "include ${1};")
	confFile := filepath.Join(root, chartConfigDir, "nats.conf")
	writeFile(t, confFile, []byte(rendered))
	opts, err := server.ProcessConfigFile(confFile)
	if err != nil {
		t.Fatalf("the chart's nats.conf with the Secret mounted does not load: %v\n%s", err, rendered)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts) // configures the resolver; nothing listens
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if len(opts.TrustedOperators) != 1 || opts.TrustedOperators[0].Subject != g.OperatorPub {
		t.Errorf("trusted operators %d, want the generated operator %s (operator mode)", len(opts.TrustedOperators), g.OperatorPub)
	}
	if opts.SystemAccount != g.SystemPub {
		t.Errorf("system account %q, want the generated %s", opts.SystemAccount, g.SystemPub)
	}
	for name, pub := range map[string]string{auth.AccountName: g.AccountPub, auth.SystemAccount: g.SystemPub} {
		if opts.AccountResolver == nil {
			t.Fatal("no account resolver")
		}
		if _, err := opts.AccountResolver.Fetch(pub); err != nil {
			t.Errorf("the resolver does not hold the account %s: %v", name, err)
		}
	}
	if opts.Cluster.Username != auth.RouteUser || opts.Cluster.Password == "" {
		t.Errorf("cluster authorization user %q, want %q with a password", opts.Cluster.Username, auth.RouteUser)
	}
	if len(opts.Routes) != len(chartRoutes) {
		t.Errorf("routes %v, want the chart's %v with the route credential", opts.Routes, chartRoutes)
	}
	for i, u := range opts.Routes {
		p, _ := u.User.Password()
		if i >= len(chartRoutes) || u.Host != chartRoutes[i] || u.User.Username() != auth.RouteUser || p != opts.Cluster.Password {
			t.Errorf("route %d = %s, want %s with the route user and password", i, u.Redacted(), chartRoutes[min(i, len(chartRoutes)-1)])
		}
	}
	if opts.MaxPayload != int32(v.Config.Merge.MaxPayload) {
		t.Errorf("max_payload %d after the includes, want the values' %d", opts.MaxPayload, v.Config.Merge.MaxPayload)
	}

	// nats-box: the operator's user by default, the sys user as "sys".
	for ctx, role := range map[string]string{"default": auth.Operator, "sys": "sys"} {
		c, ok := v.NatsBox.Contexts[ctx]
		wantKey := secretKey(filepath.ToSlash(filepath.Join(auth.CredsDir, role+".creds")))
		if !ok || c.Creds.SecretName != authSecret || c.Creds.Key != wantKey {
			t.Errorf("natsBox context %s: %+v, want the Secret %s's %s", ctx, c, authSecret, wantKey)
		}
		if _, err := os.Stat(g.Creds[role]); err != nil {
			t.Errorf("natsBox context %s: deploy/auth wrote no %s: %v", ctx, role, err)
		}
	}
}

func writeFile(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
