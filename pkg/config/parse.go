package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FieldError is a problem with one field of the config, named by its path.
type FieldError struct {
	Field string `json:"field"`
	Msg   string `json:"message"`
}

func (e FieldError) Error() string { return e.Field + ": " + e.Msg }

// Errors is every problem found in one config, in document order.
type Errors []FieldError

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return "invalid config: " + strings.Join(parts, "; ")
}

// Parse reads a serve config from YAML or JSON, rejects unknown fields and
// wrong types, fills defaults and validates it. The error, when not nil, is
// an Errors naming each offending field.
func Parse(data []byte) (ServeConfig, error) {
	var cfg ServeConfig
	if len(bytes.TrimSpace(data)) == 0 {
		return cfg, Errors{{Field: "applications", Msg: "config is empty"}}
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return cfg, Errors{{Field: "(document)", Msg: "not valid YAML or JSON: " + err.Error()}}
	}
	doc = normalize(doc)
	if _, ok := doc.(map[string]any); !ok {
		return cfg, Errors{{Field: "(document)", Msg: "must be an object with an applications list"}}
	}
	expandAuto(doc)
	if errs := unknownFields(doc, reflect.TypeOf(cfg), ""); len(errs) > 0 {
		return cfg, errs
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return cfg, Errors{{Field: "(document)", Msg: err.Error()}}
	}
	if err := decodeStrict(js, &cfg); err != nil {
		return cfg, err
	}
	cfg.ApplyDefaults()
	if errs := cfg.Validate(); len(errs) > 0 {
		return cfg, errs
	}
	return cfg, nil
}

func decodeStrict(js []byte, cfg *ServeConfig) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	err := dec.Decode(cfg)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return Errors{{Field: te.Field, Msg: fmt.Sprintf("must be %s, not %s", jsonKind(te.Type), te.Value)}}
	}
	// Errors from custom unmarshalers (Duration, Bytes) do not carry the
	// path; find the first field whose value fails on its own.
	return Errors{{Field: "(document)", Msg: err.Error()}}
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return t.String()
}

// normalize turns YAML's map[string]any / map[any]any into JSON-shaped data.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	}
	return v
}

var (
	rawMessageType = reflect.TypeOf(json.RawMessage{})
)

// unknownFields walks doc against the Go type t and reports, with their
// paths, every key that no field of t carries, every value of the wrong
// JSON kind, every number below its field's schema minimum (an explicit 0
// where the minimum is 1 is an error, not "unset") and every value of a
// custom-unit field (durations, sizes) that does not parse — all of them at
// once, before anything is decoded.
func unknownFields(doc any, t reflect.Type, path string) Errors {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var errs Errors
	switch t.Kind() {
	case reflect.Struct:
		m, ok := doc.(map[string]any)
		if !ok {
			return nil // a kind error, reported by the caller
		}
		fields := map[string]reflect.StructField{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "" && name != "-" {
				fields[name] = f
			}
		}
		keys := slices.Sorted(maps.Keys(m))
		for _, k := range keys {
			f, ok := fields[k]
			sub := join(path, k)
			if !ok {
				errs = append(errs, FieldError{Field: sub, Msg: "unknown field"})
				continue
			}
			errs = append(errs, checkValue(m[k], f.Type, f.Tag.Get("jsonschema"), sub)...)
		}
	case reflect.Slice:
		l, ok := doc.([]any)
		if !ok {
			return nil
		}
		for i, e := range l {
			errs = append(errs, checkValue(e, t.Elem(), "", fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return errs
}

// checkValue checks one value against the Go type that will hold it (and
// the field's jsonschema tag, for its minimum), then walks into it.
func checkValue(v any, t reflect.Type, schemaTag, path string) Errors {
	if v == nil {
		return nil // null: the field keeps its zero value / default
	}
	base := t
	for base.Kind() == reflect.Pointer {
		base = base.Elem()
	}
	if base == rawMessageType {
		return nil
	}
	if u, ok := reflect.New(base).Interface().(json.Unmarshaler); ok {
		// Custom units (Duration, Bytes): check here, where the path is known.
		raw, _ := json.Marshal(v)
		if err := u.UnmarshalJSON(raw); err != nil {
			return Errors{{Field: path, Msg: err.Error()}}
		}
		return nil
	}
	want := ""
	switch base.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if f, ok := number(v); !ok || f != float64(int64(f)) {
			want = "an integer"
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := number(v); !ok {
			want = "a number"
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			want = "a string"
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			want = "true or false"
		}
	case reflect.Slice:
		if _, ok := v.([]any); !ok {
			want = "a list"
		}
	case reflect.Map, reflect.Struct:
		if _, ok := v.(map[string]any); !ok {
			want = "an object"
		}
	}
	if want != "" {
		return Errors{{Field: path, Msg: fmt.Sprintf("must be %s, not %s", want, describe(v))}}
	}
	if n, ok := number(v); ok {
		if lo, ok := schemaMinimum(schemaTag); ok && n < lo {
			return Errors{{Field: path, Msg: fmt.Sprintf("must be >= %v, got %v", lo, n)}}
		}
	}
	if base.Kind() == reflect.Map {
		return nil
	}
	return unknownFields(v, base, path)
}

// number returns a YAML or JSON number (YAML gives integers as int).
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	}
	return 0, false
}

// schemaMinimum reads minimum=N from a jsonschema struct tag.
func schemaMinimum(tag string) (float64, bool) {
	for part := range strings.SplitSeq(tag, ",") {
		if v, ok := strings.CutPrefix(part, "minimum="); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// describe names a YAML/JSON value's kind for an error message.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", x)
	case float64, int, int64, uint64:
		return fmt.Sprintf("the number %v", x)
	case bool:
		return fmt.Sprintf("%v", x)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%v", v)
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// ApplyDefaults fills every unset option with its default.
func (c *ServeConfig) ApplyDefaults() {
	for i := range c.Applications {
		for j := range c.Applications[i].Deployments {
			d := &c.Applications[i].Deployments[j]
			if d.MaxOngoingRequests == 0 {
				d.MaxOngoingRequests = DefaultMaxOngoingRequests
			}
			if d.MaxQueuedRequests == 0 {
				d.MaxQueuedRequests = DefaultMaxQueuedRequests
			}
			if d.HealthCheckPeriod == 0 {
				d.HealthCheckPeriod = DefaultHealthCheckPeriod
			}
			if d.HealthCheckTimeout == 0 {
				d.HealthCheckTimeout = DefaultHealthCheckTimeout
			}
			if d.GracefulShutdownTimeout == 0 {
				d.GracefulShutdownTimeout = DefaultGracefulShutdownTimeout
			}
			if d.Runtime == "" {
				d.Runtime = RuntimeGo
			}
			if d.Protocol == "" {
				d.Protocol = ProtocolHTTP
			}
			if d.MaxModelsPerReplica == 0 {
				d.MaxModelsPerReplica = DefaultMaxModelsPerReplica
			}
			if d.MaxUnavailable == "" {
				d.MaxUnavailable = DefaultMaxUnavailable
			}
			if d.Runtime == RuntimeProcess {
				if d.StartupTimeout == 0 {
					d.StartupTimeout = DefaultStartupTimeout
				}
				if d.HealthPath == "" {
					d.HealthPath = DefaultHealthPathHTTP
					if d.Protocol == ProtocolOIP {
						d.HealthPath = DefaultHealthPathOIP
					}
				}
			}
			if d.Resources.CPU == nil {
				cpu := DefaultCPU
				d.Resources.CPU = &cpu
			}
			if d.AutoscalingConfig != nil {
				d.AutoscalingConfig.applyDefaults()
			}
			// async_methods keep their zero fields: they override the
			// SDK's defaults field by field (serve.EffectiveAsync), and
			// only then are platform defaults filled.
			if d.NumReplicas == nil && d.AutoscalingConfig == nil {
				n := DefaultNumReplicas
				d.NumReplicas = &n
			}
		}
	}
}

var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	modelRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
	// nameOrDotRE: a name that may hold dots (a graph step: "v1.2").
	nameOrDotRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
)

// uniqueName checks the name of item i of a list, at path p: it matches
// nameRE and is not one seen before in the list (seen maps the names to
// their indexes; a good one joins them). what and list name the item and
// the list in the message.
func uniqueName(add func(field, format string, args ...any), seen map[string]int, p string, i int, name, what, list string) {
	j, dup := seen[name]
	switch {
	case !nameRE.MatchString(name):
		add(p+".name", "must be 1-64 letters, digits, '-' or '_', got %q", name)
	case dup:
		add(p+".name", "duplicate %s %q (also %s[%d])", what, name, list, j)
	default:
		seen[name] = i
	}
}

// Validate checks a config whose defaults are applied; it returns every
// problem, each naming its field.
func (c ServeConfig) Validate() Errors {
	var errs Errors
	add := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	names := map[string]int{}
	prefixes := map[string]int{}
	models := map[string]string{} // OIP model name → "app/deployment"
	for i, a := range c.Applications {
		p := fmt.Sprintf("applications[%d]", i)
		uniqueName(add, names, p, i, a.Name, "application name", "applications")
		switch {
		case !strings.HasPrefix(a.RoutePrefix, "/"):
			add(p+".route_prefix", "must start with '/', got %q", a.RoutePrefix)
		case strings.HasPrefix(a.RoutePrefix, "/-/") || a.RoutePrefix == "/-":
			add(p+".route_prefix", "%q is reserved for jetserve's own endpoints", a.RoutePrefix)
		case a.RoutePrefix == OIPRoutePrefix || strings.HasPrefix(a.RoutePrefix, OIPRoutePrefix+"/"):
			add(p+".route_prefix", "%q is reserved for the Open Inference Protocol endpoints (%s/...), which the ingress serves before application routes", a.RoutePrefix, OIPRoutePrefix)
		case len(a.RoutePrefix) > 1 && strings.HasSuffix(a.RoutePrefix, "/"):
			add(p+".route_prefix", "must not end with '/', got %q", a.RoutePrefix)
		case !cleanPrefix(a.RoutePrefix):
			add(p+".route_prefix", "must be a clean absolute path of segments of letters, digits, '-', '_', '.' and '~' (no empty, '.' or '..' segment, no '%%', spaces or other characters), got %q", a.RoutePrefix)
		default:
			if j, dup := prefixes[a.RoutePrefix]; dup {
				add(p+".route_prefix", "duplicate route prefix %q (also applications[%d])", a.RoutePrefix, j)
			}
			prefixes[a.RoutePrefix] = i
		}
		if len(a.Deployments) == 0 {
			add(p+".deployments", "must list at least one deployment")
		}
		deps := map[string]int{}
		for j, d := range a.Deployments {
			dp := fmt.Sprintf("%s.deployments[%d]", p, j)
			uniqueName(add, deps, dp, j, d.Name, "deployment name", "deployments")
			switch d.Runtime {
			case RuntimeGo:
				if d.Handler == "" {
					add(dp+".handler", "is required: the name of a deployment registered with the SDK")
				}
				for _, f := range []struct {
					name string
					set  bool
				}{{"command", len(d.Command) > 0}, {"env", len(d.Env) > 0}, {"port", d.Port != 0},
					{"health_path", d.HealthPath != ""}, {"startup_timeout", d.StartupTimeout != 0}} {
					if f.set {
						add(dp+"."+f.name, "applies only to runtime process")
					}
				}
			case RuntimeProcess:
				if len(d.Command) == 0 || d.Command[0] == "" {
					add(dp+".command", "is required for runtime process: the program and its arguments")
				}
				if d.Port < 0 || d.Port > 65535 {
					add(dp+".port", "must be 0 (the worker picks one) or a TCP port, got %d", d.Port)
				}
				if !strings.HasPrefix(d.HealthPath, "/") {
					add(dp+".health_path", "must start with '/', got %q", d.HealthPath)
				}
				if d.StartupTimeout.D() <= 0 {
					add(dp+".startup_timeout", "must be > 0")
				}
				for k := range d.Env {
					if k == "" || strings.ContainsAny(k, "=\x00") {
						add(dp+".env", "invalid variable name %q", k)
					}
				}
			default:
				add(dp+".runtime", "must be %q or %q, got %q", RuntimeGo, RuntimeProcess, d.Runtime)
			}
			switch d.Protocol {
			case ProtocolHTTP:
				if len(d.OIPModels) > 0 {
					add(dp+".oip_models", "applies only to protocol oip")
				}
			case ProtocolOIP:
				for k, m := range d.ModelNames() {
					mp := fmt.Sprintf("%s.oip_models[%d]", dp, k)
					if len(d.OIPModels) == 0 {
						mp = dp + ".name"
					}
					if !modelRE.MatchString(m) {
						add(mp, "OIP model name must be 1-128 letters, digits, '.', '-' or '_', got %q", m)
					} else if other, dup := models[m]; dup {
						add(mp, "OIP model %q is also served by %s: model names are unique across the config", m, other)
					} else {
						models[m] = fmt.Sprintf("%s/%s", a.Name, d.Name)
					}
				}
			default:
				add(dp+".protocol", "must be %q or %q, got %q", ProtocolHTTP, ProtocolOIP, d.Protocol)
			}
			if d.MaxModelsPerReplica < 1 {
				add(dp+".max_models_per_replica", "must be >= 1, got %d", d.MaxModelsPerReplica)
			}
			if d.NumReplicas != nil && *d.NumReplicas < 0 {
				add(dp+".num_replicas", "must be >= 0, got %d", *d.NumReplicas)
			}
			if _, err := ParseIntOrPercent(string(d.MaxUnavailable)); err != nil {
				add(dp+".max_unavailable", "%v", err)
			}
			if d.MaxOngoingRequests < 1 {
				add(dp+".max_ongoing_requests", "must be >= 1, got %d", d.MaxOngoingRequests)
			}
			if d.MaxQueuedRequests < -1 || d.MaxQueuedRequests == 0 {
				add(dp+".max_queued_requests", "must be -1 (unlimited) or >= 1, got %d", d.MaxQueuedRequests)
			}
			if d.Resources.CPU != nil && *d.Resources.CPU < 0 {
				add(dp+".resources.cpu", "must be >= 0, got %v", *d.Resources.CPU)
			}
			if d.Resources.GPU < 0 {
				add(dp+".resources.gpu", "must be >= 0, got %v", d.Resources.GPU)
			}
			if d.Resources.GPU > 1 && d.Resources.GPU != float64(int(d.Resources.GPU)) {
				add(dp+".resources.gpu", "above 1 must be a whole number of GPUs, got %v", d.Resources.GPU)
			}
			if len(d.UserConfig) > 0 && !json.Valid(d.UserConfig) {
				add(dp+".user_config", "must be valid JSON")
			}
			if d.HealthCheckTimeout.D() <= 0 || d.HealthCheckPeriod.D() <= 0 {
				add(dp+".health_check_period", "period and timeout must be > 0")
			}
			if ac := d.AutoscalingConfig; ac != nil {
				ap := dp + ".autoscaling_config"
				if d.NumReplicas != nil {
					add(dp+".num_replicas", "must not be a number when autoscaling_config is set (use \"auto\" or leave it out)")
				}
				minR := *ac.MinReplicas
				if minR < 0 {
					add(ap+".min_replicas", "must be >= 0, got %d", minR)
				}
				if ac.MaxReplicas < 1 || ac.MaxReplicas < minR {
					add(ap+".max_replicas", "must be >= 1 and >= min_replicas (%d), got %d", minR, ac.MaxReplicas)
				}
				if ac.InitialReplicas != nil && (*ac.InitialReplicas < minR || *ac.InitialReplicas > ac.MaxReplicas) {
					add(ap+".initial_replicas", "must be within [min_replicas, max_replicas] = [%d, %d], got %d", minR, ac.MaxReplicas, *ac.InitialReplicas)
				}
				if ac.TargetOngoingRequests <= 0 {
					add(ap+".target_ongoing_requests", "must be > 0, got %v", ac.TargetOngoingRequests)
				}
				if ac.UpscalingFactor <= 0 {
					add(ap+".upscaling_factor", "must be > 0, got %v", ac.UpscalingFactor)
				}
				if ac.DownscalingFactor <= 0 {
					add(ap+".downscaling_factor", "must be > 0, got %v", ac.DownscalingFactor)
				}
				if ac.TargetBacklogPerReplica <= 0 {
					add(ap+".target_backlog_per_replica", "must be > 0, got %v", ac.TargetBacklogPerReplica)
				}
				if ac.LookBackPeriod.D() <= 0 || ac.MetricsInterval.D() <= 0 {
					add(ap+".look_back_period", "look_back_period and metrics_interval must be > 0")
				}
			}
			methods := map[string]int{}
			for k, m := range d.AsyncMethods {
				mp := fmt.Sprintf("%s.async_methods[%d]", dp, k)
				uniqueName(add, methods, mp, k, m.Name, "async method", "async_methods")
				if m.MaxQueued < 0 {
					add(mp+".max_queued", "must be >= 1, got %d", m.MaxQueued)
				}
				if m.MaxRunning < 0 {
					add(mp+".max_running", "must be >= 1, got %d", m.MaxRunning)
				}
				if m.Priority != nil && (*m.Priority < 0 || *m.Priority > 9) {
					add(mp+".priority", "must be 0..9, got %d", *m.Priority)
				}
				if m.MaxAttempts < 0 {
					add(mp+".max_attempts", "must be >= 1, got %d", m.MaxAttempts)
				}
				validateVersioning(add, mp, m)
			}
		}
		asyncNames := map[string]string{}
		for j, d := range a.Deployments {
			for k, m := range d.AsyncMethods {
				if other, dup := asyncNames[m.Name]; dup && other != d.Name {
					add(fmt.Sprintf("%s.deployments[%d].async_methods[%d].name", p, j, k),
						"async method %q is also a method of deployment %s: the route /{route_prefix}/%s must name one", m.Name, other, m.Name)
				}
				asyncNames[m.Name] = d.Name
			}
		}
		for j, d := range a.Deployments {
			if len(d.Uses) > 0 {
				validateUses(a, d, fmt.Sprintf("%s.deployments[%d]", p, j), deps, add)
			}
		}
		switch {
		case a.Graph != nil:
			if a.Ingress != "" {
				add(p+".ingress", "must not be set with a graph: requests enter the graph's %q node, not a deployment", GraphRoot)
			}
			validateGraph(a, p+".graph", deps, add)
		case a.Ingress == "":
			add(p+".ingress", "is required: the name of one of the application's deployments (or give the application a graph)")
		default:
			if _, ok := deps[a.Ingress]; !ok && len(a.Deployments) > 0 {
				add(p+".ingress", "names no deployment of this application: %q", a.Ingress)
			}
		}
	}
	return errs
}

// validateVersioning checks the versioning fields of async method m, at
// path mp. Only workflow runs are pinned to a version: on a plain async
// method versioning and pinned_for would do nothing, so they are refused
// rather than ignored.
func validateVersioning(add func(field, format string, args ...any), mp string, m AsyncMethod) {
	if !m.Workflow {
		why := "only workflows are versioned: async method %q is not one (a workflow's entry says workflow: true, as jetserve build writes it); remove %s"
		if m.Versioning != "" {
			add(mp+".versioning", why, m.Name, "versioning")
		}
		if m.PinnedFor != 0 {
			add(mp+".pinned_for", why, m.Name, "pinned_for")
		}
		return
	}
	if m.Versioning != "" && m.Versioning != VersioningPinned && m.Versioning != VersioningAutoUpgrade {
		add(mp+".versioning", "must be %q or %q, got %q", VersioningPinned, VersioningAutoUpgrade, m.Versioning)
	}
	if m.PinnedFor < 0 {
		add(mp+".pinned_for", "must be > 0, got %s", m.PinnedFor.D())
	}
}

// DropPlainVersioning clears versioning and pinned_for on the async
// methods of c that are not workflows — what configs stored before
// Validate refused them hold, to no effect — and reports whether it
// cleared any: such a stored config keeps loading, and does what it did.
func (c *ServeConfig) DropPlainVersioning() bool {
	dropped := false
	for i := range c.Applications {
		for j := range c.Applications[i].Deployments {
			ms := c.Applications[i].Deployments[j].AsyncMethods
			for k := range ms {
				if !ms[k].Workflow && (ms[k].Versioning != "" || ms[k].PinnedFor != 0) {
					ms[k].Versioning, ms[k].PinnedFor, dropped = "", 0, true
				}
			}
		}
	}
	return dropped
}

// maxPrefixLen bounds a route prefix.
const maxPrefixLen = 256

// cleanPrefix reports whether p is "/" or "/seg[/seg...]" with segments of
// RFC 3986 unreserved characters only, none of them "." or "..": what the
// ingress matches on decoded paths without surprises (no encoded
// separators, no dot segments, nothing to normalise).
func cleanPrefix(p string) bool {
	if p == "/" {
		return true
	}
	if len(p) > maxPrefixLen || !strings.HasPrefix(p, "/") {
		return false
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for _, c := range seg {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~') {
				return false
			}
		}
	}
	return true
}

// expandAuto rewrites num_replicas: "auto" as Ray does: autoscaling with
// target_ongoing_requests 2, min 1, max 100 (and max_ongoing_requests 5,
// already the default).
func expandAuto(doc any) {
	apps, _ := doc.(map[string]any)["applications"].([]any)
	for _, a := range apps {
		am, _ := a.(map[string]any)
		deps, _ := am["deployments"].([]any)
		for _, d := range deps {
			dm, ok := d.(map[string]any)
			if !ok || dm["num_replicas"] != "auto" {
				continue
			}
			delete(dm, "num_replicas")
			if _, has := dm["autoscaling_config"]; !has {
				dm["autoscaling_config"] = map[string]any{"min_replicas": 1, "max_replicas": 100, "target_ongoing_requests": 2}
			}
		}
	}
}
