// Package service is what every jetserve service shares around its own
// logic: configuration loading (koanf: defaults → YAML file → JETSERVE_*
// environment → flags), the zerolog logger, the ops HTTP server (/metrics,
// /healthz), the NATS connection and the JetStream buckets.
//
// Nothing here reads the process environment or installs signal handlers:
// main passes args and environ in, and owns signals.
package service

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	kenv "github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// EnvPrefix prefixes every environment variable jetserve reads.
const EnvPrefix = "JETSERVE_"

// Common is the configuration every service shares; services embed it
// with `koanf:",squash"`.
type Common struct {
	NATS NATSConfig `koanf:"nats"`
	Log  LogConfig  `koanf:"log"`
	// OpsAddr serves /metrics and /healthz; "" turns it off.
	OpsAddr string `koanf:"ops_addr" help:"address of /metrics and /healthz (empty: off)"`
	// Tracing exports the service's spans over OTLP/HTTP when it names an
	// endpoint (pkg/tracing).
	Tracing tracing.Config `koanf:"tracing"`
	// OpsPprof adds Go's /debug/pprof/ to the ops server (make bench
	// takes CPU profiles of the fleet's processes through it).
	OpsPprof bool `koanf:"ops_pprof" help:"serve Go's /debug/pprof/ profiles on ops_addr too"`
}

// NATSConfig says how to reach NATS.
type NATSConfig struct {
	// URL is a comma-separated list of servers.
	URL string `koanf:"url" help:"NATS servers, comma-separated"`
	// Prefix namespaces every subject, stream and bucket.
	Prefix string `koanf:"prefix" help:"prefix of every subject, stream and bucket"`
	// Creds is an optional NATS credentials file (a user JWT and its
	// nkey seed; deploy/auth generates one per service).
	Creds string `koanf:"creds" help:"NATS credentials file (deploy/auth writes one per service)"`
	// TLS verifies the servers' certificates against a CA of one's own
	// and presents a client certificate, when the servers ask for one.
	TLS NATSTLS `koanf:"tls"`
	// Replicas is the replica count of every stream, bucket and object
	// store the service creates: 1 on one server, 3 on a cluster. What
	// exists with more replicas is adopted as it is, never downgraded.
	Replicas int `koanf:"replicas" help:"replicas of the streams and buckets created (3 on a cluster); never downgrades"`
	// PingInterval is how often the client pings its server. Two pings
	// unanswered and the connection is given up and another server of
	// URL tried: a server cut off from the network (no reset, only
	// silence) is left within 2–3 intervals instead of nats.go's default
	// 4–6 minutes.
	PingInterval time.Duration `koanf:"ping_interval" help:"how often the client pings its server (two unanswered: try another)"`
}

// NATSTLS are a NATS client's TLS files (PEM). A tls:// URL with none of
// them verifies against the system's roots.
type NATSTLS struct {
	// CAFile is the CA that signed the servers' certificates.
	CAFile string `koanf:"ca_file" help:"CA file that signed the NATS servers' certificates"`
	// CertFile and KeyFile are the client certificate (mTLS).
	CertFile string `koanf:"cert_file" help:"client certificate for NATS mTLS (with key_file)"`
	KeyFile  string `koanf:"key_file" help:"client key for NATS mTLS (with cert_file)"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `koanf:"level" help:"log level: trace, debug, info, warn, error"`
	Format string `koanf:"format" help:"log format: json or console"`
}

// Bounds of nats.ping_interval.
const (
	DefaultPingInterval = 2 * time.Second
	MinPingInterval     = 100 * time.Millisecond
)

// DefaultCommon returns the shared defaults.
func DefaultCommon(opsAddr string) Common {
	return Common{
		NATS:    NATSConfig{URL: "nats://127.0.0.1:4222", Prefix: "jetserve", Replicas: 1, PingInterval: DefaultPingInterval},
		Log:     LogConfig{Level: "info", Format: "json"},
		OpsAddr: opsAddr,
		Tracing: tracing.DefaultConfig(),
	}
}

// Validate checks the shared options.
func (c Common) Validate() error {
	var errs []error
	if c.NATS.URL == "" {
		errs = append(errs, errors.New("nats.url: is required"))
	}
	if _, err := protocol.NewNames(c.NATS.Prefix); err != nil {
		errs = append(errs, fmt.Errorf("nats.prefix: %w", err))
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > streams.MaxReplicas {
		errs = append(errs, fmt.Errorf("nats.replicas: must be 1..%d (3 on a 3-node cluster), got %d", streams.MaxReplicas, c.NATS.Replicas))
	}
	if c.NATS.PingInterval < MinPingInterval {
		errs = append(errs, fmt.Errorf("nats.ping_interval: must be at least %v, got %v", MinPingInterval, c.NATS.PingInterval))
	}
	if (c.NATS.TLS.CertFile == "") != (c.NATS.TLS.KeyFile == "") {
		errs = append(errs, errors.New("nats.tls.cert_file, nats.tls.key_file: set both or neither"))
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		errs = append(errs, fmt.Errorf("log.level: %w", err))
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		errs = append(errs, fmt.Errorf("log.format: must be json or console, got %q", c.Log.Format))
	}
	if err := c.Tracing.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ErrHelp is returned by Load when -h/--help was asked for; the usage has
// been written.
var ErrHelp = pflag.ErrHelp

// Load fills cfg, a pointer to a struct with koanf tags that already holds
// the defaults, from (later wins): the defaults, the YAML file named by
// --config or JETSERVE_CONFIG, environment variables JETSERVE_<KEY> (key
// upper-cased, '.' → '_', e.g. JETSERVE_NATS_URL), and flags --<key>
// (e.g. --nats.url). Every option is also a flag. Unknown keys in the file
// are an error naming them.
func Load(cfg any, name string, args, environ []string, usage io.Writer) error {
	k := koanf.New(".")
	defaults := map[string]any{}
	flatten(reflect.ValueOf(cfg), "", defaults)
	if err := k.Load(confmap.Provider(defaults, "."), nil); err != nil {
		return fmt.Errorf("load defaults: %w", err)
	}
	known := map[string]bool{}
	envKeys := map[string]string{}
	for _, key := range k.Keys() {
		known[key] = true
		envKeys[EnvPrefix+strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))] = key
	}

	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(usage)
	fs.SortFlags = true
	cfgFile := fs.String("config", "", "YAML configuration file (or "+EnvPrefix+"CONFIG)")
	version := fs.Bool("version", false, "print the version and exit")
	for _, o := range Options(cfg) {
		fs.Var(&optionFlag{value: fmt.Sprint(k.Get(o.Key)), typ: o.Type}, o.Key,
			o.Help+" (env "+o.Env+")")
	}
	fs.Usage = func() {
		fmt.Fprintf(usage, "Usage of %s (every option also reads %s<KEY> and the --config file; see docs/options.md):\n", name, EnvPrefix)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		fmt.Fprintln(usage, name, Version())
		return ErrHelp
	}

	path := *cfgFile
	env := map[string]string{}
	for _, kv := range environ {
		if n, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(n, EnvPrefix) {
			env[n] = v
		}
	}
	if path == "" {
		path = env[EnvPrefix+"CONFIG"]
	}
	if path != "" {
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
			return fmt.Errorf("read config file %s: %w", path, err)
		}
		for _, key := range fk.Keys() {
			if !known[key] {
				return fmt.Errorf("config file %s: unknown option %q", path, key)
			}
		}
		if err := k.Merge(fk); err != nil {
			return fmt.Errorf("merge config file: %w", err)
		}
	}
	var unknownEnv []string
	err := k.Load(kenv.Provider(".", kenv.Opt{
		Prefix: EnvPrefix,
		EnvironFunc: func() []string {
			out := make([]string, 0, len(env))
			for n, v := range env {
				out = append(out, n+"="+v)
			}
			return out
		},
		TransformFunc: func(n, v string) (string, any) {
			if n == EnvPrefix+"CONFIG" {
				return "", nil
			}
			key, ok := envKeys[n]
			if !ok {
				if cliVariable(n) {
					return "", nil
				}
				unknownEnv = append(unknownEnv, n)
				return "", nil
			}
			return key, v
		},
	}), nil)
	if err != nil {
		return fmt.Errorf("read environment: %w", err)
	}
	if len(unknownEnv) > 0 {
		sort.Strings(unknownEnv)
		return fmt.Errorf("unknown environment variable(s) %s (known: %s…)", strings.Join(unknownEnv, ", "), firstKeys(envKeys))
	}
	if err := k.Load(posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		if !f.Changed || f.Name == "config" {
			return "", nil
		}
		return f.Name, f.Value.String()
	}), nil); err != nil {
		return fmt.Errorf("read flags: %w", err)
	}
	if err := k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return fmt.Errorf("decode configuration: %w", err)
	}
	return nil
}

// cliVariable reports whether name is one of the JETSERVE_ variables the
// jetserve CLI reads (its URLs and keys, README "Admin API and CLI"): a
// shell that exports them for the CLI also starts services, whose options
// they are not, so a service passes over them rather than refusing to
// start; any other unknown JETSERVE_ variable is still an error.
func cliVariable(name string) bool {
	switch name {
	case EnvPrefix + "URL", EnvPrefix + "ADMIN",
		EnvPrefix + "API_KEY", EnvPrefix + "API_KEY_FILE",
		EnvPrefix + "ADMIN_KEY", EnvPrefix + "ADMIN_KEY_FILE":
		return true
	}
	return false
}

func firstKeys(m map[string]string) string {
	ks := slices.Sorted(maps.Keys(m))
	if len(ks) > 4 {
		ks = ks[:4]
	}
	return strings.Join(ks, ", ")
}

// Option is one configuration option of a service, as -h and the docs
// list it.
type Option struct {
	Key     string // dotted koanf key, also the --flag
	Env     string // JETSERVE_<KEY>
	Type    string // string, int, float, bool, duration, list
	Default any
	Help    string // the field's help tag
}

// Options lists cfg's options (a pointer to a struct with koanf tags
// holding the defaults), sorted by key.
func Options(cfg any) []Option {
	var out []Option
	walkOptions(reflect.ValueOf(cfg), "", func(key string, f reflect.StructField, v reflect.Value) {
		out = append(out, Option{Key: key, Env: EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key)),
			Type: typeName(f.Type), Default: v.Interface(), Help: f.Tag.Get("help")})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "duration"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "int"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "float"
	case t.Kind() == reflect.Slice:
		return "list"
	}
	return "string"
}

// optionFlag is a flag that keeps what was given as text (koanf decodes
// it into the option's type) but names that type in -h.
type optionFlag struct {
	value, typ string
}

func (f *optionFlag) String() string     { return f.value }
func (f *optionFlag) Set(v string) error { f.value = v; return nil }
func (f *optionFlag) Type() string       { return f.typ }

// Version is the program's version: the main module's version and, when
// the build recorded it, its VCS revision, then the Go version.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v += " " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v += "+dirty"
			}
		}
	}
	return v + " " + bi.GoVersion
}

// flatten writes every leaf option of the struct v into out under its
// dotted koanf key.
func flatten(v reflect.Value, prefix string, out map[string]any) {
	walkOptions(v, prefix, func(key string, _ reflect.StructField, fv reflect.Value) { out[key] = fv.Interface() })
}

// walkOptions calls visit for every leaf option of the struct v with its
// dotted koanf key, honouring `koanf:",squash"` on embedded structs.
func walkOptions(v reflect.Value, prefix string, visit func(key string, f reflect.StructField, v reflect.Value)) {
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		fv := v.Field(i)
		if opts == "squash" {
			walkOptions(fv, prefix, visit)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() != "time" {
			walkOptions(fv, key+".", visit)
			continue
		}
		visit(key, f, fv)
	}
}
