package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
)

// App declares an application in code, beside the registration of its
// deployments (Ray Serve's `build` from a bound DAG): its deployments with
// the defaults their code wants — replicas, limits, resources,
// user_config, autoscaling — and its edges (which deployment calls which,
// Uses). Registry.Build turns declared applications into the serve
// config, and BuildYAML into the YAML operators edit and deploy without a
// rebuild:
//
//	reg.DeclareApp(serve.App{
//		Name: "text", RoutePrefix: "/text", Ingress: "Pipeline",
//		Deployments: []serve.Deployment{
//			serve.Deploy("Pipeline", "text.Pipeline", serve.NumReplicas(2),
//				serve.UserConfig(PipelineConfig{Keywords: 5}), serve.Uses("Sentiment")),
//			serve.Deploy("Sentiment", "text.Sentiment", serve.CPU(0.25), serve.Memory("64Mi")),
//		},
//	})
type App struct {
	Name        string
	RoutePrefix string
	// Ingress names the deployment HTTP requests go to; none when the
	// application has a Graph.
	Ingress     string
	Deployments []Deployment
	// Graph, if set, is the application's declarative request flow (see
	// config.Graph), run by the ingress.
	Graph *config.Graph
	// Comment is written above the application in the YAML.
	Comment string
}

// Deployment is one deployment of a declared App; Deploy makes one.
type Deployment struct {
	// Config holds the fields the declaration sets; the rest take their
	// defaults (config.ApplyDefaults) when the config is parsed.
	Config config.Deployment
	// Comment is written above the deployment in the YAML; FieldComments
	// at the end of a field's line, by the field's name
	// ("max_ongoing_requests").
	Comment       string
	FieldComments map[string]string

	err error // an option that could not be applied
}

// DeploymentOption sets a field of a declared deployment.
type DeploymentOption func(*Deployment)

// Deploy declares the deployment name, served by the handler registered
// under handler, with the options' code defaults.
func Deploy(name, handler string, opts ...DeploymentOption) Deployment {
	d := Deployment{Config: config.Deployment{Name: name, Handler: handler}}
	for _, o := range opts {
		o(&d)
	}
	return d
}

func (d *Deployment) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// NumReplicas sets num_replicas.
func NumReplicas(n int) DeploymentOption {
	return func(d *Deployment) { d.Config.NumReplicas = &n }
}

// MaxOngoingRequests sets max_ongoing_requests (per replica).
func MaxOngoingRequests(n int) DeploymentOption {
	return func(d *Deployment) { d.Config.MaxOngoingRequests = n }
}

// MaxQueuedRequests sets max_queued_requests (per router; -1 unlimited).
func MaxQueuedRequests(n int) DeploymentOption {
	return func(d *Deployment) { d.Config.MaxQueuedRequests = n }
}

// CPU sets resources.cpu (fractional).
func CPU(cpus float64) DeploymentOption {
	return func(d *Deployment) { d.Config.Resources.CPU = &cpus }
}

// GPU sets resources.gpu (fractional below 1).
func GPU(gpus float64) DeploymentOption {
	return func(d *Deployment) { d.Config.Resources.GPU = gpus }
}

// Memory sets resources.memory: bytes, or a quantity such as "512Mi".
func Memory(size string) DeploymentOption {
	return func(d *Deployment) {
		b, err := config.ParseBytes(size)
		if err != nil {
			d.fail(fmt.Errorf("memory: %w", err))
			return
		}
		d.Config.Resources.Memory = b
	}
}

// Labels sets resources.labels, the worker labels a replica needs.
func Labels(labels map[string]string) DeploymentOption {
	return func(d *Deployment) { d.Config.Resources.Labels = labels }
}

// UserConfig sets the user_config the constructor and Reconfigure get:
// v encoded as JSON (a struct keeps its field order in the YAML).
func UserConfig(v any) DeploymentOption {
	return func(d *Deployment) {
		b, err := json.Marshal(v)
		if err != nil {
			d.fail(fmt.Errorf("user_config: %w", err))
			return
		}
		d.Config.UserConfig = b
	}
}

// Uses declares the deployments this one calls through handles (its
// edges). Build refuses an edge to a deployment absent from the
// application, naming both; a constructor that takes a handle to a
// deployment not listed fails (NewLocal, and the replica's start in the
// fleet).
func Uses(deployments ...string) DeploymentOption {
	return func(d *Deployment) { d.Config.Uses = append(d.Config.Uses, deployments...) }
}

// Autoscaling sets autoscaling_config (then num_replicas must be unset).
func Autoscaling(a config.AutoscalingConfig) DeploymentOption {
	return func(d *Deployment) { d.Config.AutoscalingConfig = &a }
}

// GracefulShutdownTimeout sets graceful_shutdown_timeout.
func GracefulShutdownTimeout(t time.Duration) DeploymentOption {
	return func(d *Deployment) { d.Config.GracefulShutdownTimeout = config.Duration(t) }
}

// RequestTimeout sets request_timeout.
func RequestTimeout(t time.Duration) DeploymentOption {
	return func(d *Deployment) { d.Config.RequestTimeout = config.Duration(t) }
}

// HealthCheck sets health_check_period and health_check_timeout.
func HealthCheck(period, timeout time.Duration) DeploymentOption {
	return func(d *Deployment) {
		d.Config.HealthCheckPeriod, d.Config.HealthCheckTimeout = config.Duration(period), config.Duration(timeout)
	}
}

// Configure sets any other field of the deployment's config (protocol,
// oip_models, max_unavailable, …).
func Configure(f func(*config.Deployment)) DeploymentOption {
	return func(d *Deployment) { f(&d.Config) }
}

// Comment is written above the deployment in the YAML.
func Comment(text string) DeploymentOption {
	return func(d *Deployment) { d.Comment = text }
}

// FieldComment is written at the end of field's line in the YAML
// (field as the config names it: "max_ongoing_requests").
func FieldComment(field, text string) DeploymentOption {
	return func(d *Deployment) {
		if d.FieldComments == nil {
			d.FieldComments = map[string]string{}
		}
		d.FieldComments[field] = text
	}
}

// DeclareApp adds declared applications to the registry (what Build and a
// worker's `build` command write). A name declared twice is an error.
func (r *Registry) DeclareApp(apps ...App) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range apps {
		if a.Name == "" {
			return errors.New("declare application: a name is required")
		}
		if slices.ContainsFunc(r.apps, func(o App) bool { return o.Name == a.Name }) {
			return fmt.Errorf("declare application %q: already declared", a.Name)
		}
		r.apps = append(r.apps, a)
	}
	return nil
}

// Apps returns the declared applications, in declaration order.
func (r *Registry) Apps() []App {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.apps)
}

// App returns the declared application named name.
func (r *Registry) App(name string) (App, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, a := range r.apps {
		if a.Name == name {
			return a, true
		}
	}
	return App{}, false
}

// Build returns the serve config of the declared applications named (all
// of them, in declaration order, when none is named), with only the fields
// the declarations set (parse it, or call ApplyDefaults, for the rest).
// Each deployment's async methods are those its handler registered
// (WithAsync) with every setting filled (EffectiveAsync), written so that
// operators see and tune them. It fails, naming
// what is wrong, for an unknown application, a handler not registered, an
// option that could not be applied, or a config that does not validate —
// an edge (Uses) to a deployment absent from its application among them.
func (r *Registry) Build(names ...string) (config.ServeConfig, error) {
	apps, err := r.pick(names)
	if err != nil {
		return config.ServeConfig{}, err
	}
	sc := config.ServeConfig{Applications: make([]config.Application, 0, len(apps))}
	var errs []error
	for _, a := range apps {
		ca := config.Application{Name: a.Name, RoutePrefix: a.RoutePrefix, Ingress: a.Ingress, Graph: a.Graph}
		for _, d := range a.Deployments {
			if d.err != nil {
				errs = append(errs, fmt.Errorf("application %s, deployment %s: %w", a.Name, d.Config.Name, d.err))
			}
			c := d.Config
			if c.Runtime != config.RuntimeProcess {
				if _, ok := r.Lookup(c.Handler); !ok {
					errs = append(errs, fmt.Errorf("application %s, deployment %s: handler %q is not registered (registered: %s)",
						a.Name, c.Name, c.Handler, strings.Join(r.Names(), ", ")))
				}
			}
			if sdk := r.AsyncMethods(c.Handler); len(sdk) > 0 || len(c.AsyncMethods) > 0 {
				// Every knob, as the code (and the platform) sets it:
				// what operators tune.
				c.AsyncMethods = EffectiveAsync(sdk, c.AsyncMethods)
			}
			ca.Deployments = append(ca.Deployments, c)
		}
		sc.Applications = append(sc.Applications, ca)
	}
	if len(errs) > 0 {
		return config.ServeConfig{}, errors.Join(errs...)
	}
	// Validate a copy with its defaults, as Parse would: the returned
	// config keeps only what the declarations set.
	var probe config.ServeConfig
	b, err := json.Marshal(sc)
	if err != nil {
		return config.ServeConfig{}, fmt.Errorf("build: %w", err)
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return config.ServeConfig{}, fmt.Errorf("build: %w", err)
	}
	probe.ApplyDefaults()
	if errs := probe.Validate(); len(errs) > 0 {
		return config.ServeConfig{}, fmt.Errorf("build: %w", errs)
	}
	return sc, nil
}

// BuildYAML is Build written as the YAML an operator edits and deploys
// (`jetserve deploy FILE`), with the declarations' comments.
func (r *Registry) BuildYAML(names ...string) ([]byte, error) {
	sc, err := r.Build(names...)
	if err != nil {
		return nil, err
	}
	apps, _ := r.pick(names)
	built := make([]string, len(apps))
	for i, a := range apps {
		built[i] = a.Name
	}
	comments := map[string]string{"": fmt.Sprintf(
		"The serve config of %s, built from the declarations in code (serve.App).\n"+
			"Edit it (replicas, resources, user_config, autoscaling) and apply it without a rebuild:\n"+
			"jetserve deploy FILE", strings.Join(built, ", "))}
	for i, a := range apps {
		p := fmt.Sprintf("applications[%d]", i)
		comments[p] = a.Comment
		for j, d := range a.Deployments {
			dp := fmt.Sprintf("%s.deployments[%d]", p, j)
			comments[dp] = d.Comment
			for f, c := range d.FieldComments {
				comments[dp+"."+f] = c
			}
		}
	}
	return config.YAML(sc, func(path string) string { return comments[path] })
}

func (r *Registry) pick(names []string) ([]App, error) {
	all := r.Apps()
	if len(names) == 0 {
		if len(all) == 0 {
			return nil, errors.New("build: no application is declared (Registry.DeclareApp)")
		}
		return all, nil
	}
	out := make([]App, 0, len(names))
	for _, n := range names {
		a, ok := r.App(n)
		if !ok {
			known := make([]string, len(all))
			for i, a := range all {
				known[i] = a.Name
			}
			sort.Strings(known)
			return nil, fmt.Errorf("build: no application %q is declared (declared: %s)", n, strings.Join(known, ", "))
		}
		out = append(out, a)
	}
	return out, nil
}

// UndeclaredHandle is the message for a handle deployment takes to name,
// a deployment of its application that its uses do not list.
func UndeclaredHandle(deployment, name string, uses []string) string {
	return fmt.Sprintf("deployment %s takes a handle to %q, which its uses do not list (uses: %s)", deployment, name, strings.Join(uses, ", "))
}

// EdgesError is the error a replica's start fails with when its
// constructor took handles to deployments (undeclared) that its uses do
// not list.
func EdgesError(deployment string, undeclared, uses []string) error {
	q := make([]string, len(undeclared))
	for i, n := range undeclared {
		q[i] = fmt.Sprintf("%q", n)
	}
	return fmt.Errorf("handle to %s, which deployment %s does not declare: add it to its uses (now: %s)",
		strings.Join(q, ", "), deployment, strings.Join(uses, ", "))
}

// BuildApp returns the declared application name as its deployments run
// it: built (Build) with every default filled — what NewLocal takes.
func (r *Registry) BuildApp(name string) (config.Application, error) {
	sc, err := r.Build(name)
	if err != nil {
		return config.Application{}, err
	}
	sc.ApplyDefaults()
	return sc.Applications[0], nil
}
