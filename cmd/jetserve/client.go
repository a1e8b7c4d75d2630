package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/jetserve/jetserve/pkg/config"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/spf13/pflag"
)

func flags(name string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// adminTarget is the admin API's URL and the key sent to it.
type adminTarget struct{ url, key *string }

func adminFlag(fs *pflag.FlagSet, env map[string]string) adminTarget {
	def := env["JETSERVE_ADMIN"]
	if def == "" {
		def = "http://127.0.0.1:8265"
	}
	return adminTarget{
		url: fs.String("admin", def, "admin API URL (scheduler)"),
		key: fs.String("admin-key", envKey(env, "JETSERVE_ADMIN_KEY", fs), "admin API key (default $JETSERVE_ADMIN_KEY, or the file $JETSERVE_ADMIN_KEY_FILE names; prefer those: flags show in ps)"),
	}
}

// apiKeyFlag is the ingress key flag of call and jobs.
func apiKeyFlag(fs *pflag.FlagSet, env map[string]string) *string {
	return fs.String("api-key", envKey(env, "JETSERVE_API_KEY", fs), "ingress API key or bearer token (default $JETSERVE_API_KEY, or the file $JETSERVE_API_KEY_FILE names; prefer those: flags show in ps)")
}

// envKey is the key in the variable name, else in the file name_FILE
// names (Docker's secrets convention); a file that cannot be read is
// reported on the flag set's output.
func envKey(env map[string]string, name string, fs *pflag.FlagSet) string {
	if v := env[name]; v != "" {
		return v
	}
	path := env[name+"_FILE"]
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(fs.Output(), "jetserve: %s_FILE: %v\n", name, err)
		return ""
	}
	return strings.TrimSpace(string(b))
}

// authorize sets the bearer credential, if any.
func authorize(req *http.Request, key string) {
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
}

// apiError is the admin API's error body.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Fields  []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"fields"`
}

func do(ctx context.Context, key, method, url string, body []byte, contentType string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	authorize(req, key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		var ae apiError
		if json.Unmarshal(b, &ae) == nil && ae.Message != "" {
			msg := ae.Message
			if len(ae.Fields) > 0 { // the message lists them too ("invalid config: f: m; …"): one per line instead
				msg, _, _ = strings.Cut(msg, ": ")
			}
			for _, f := range ae.Fields {
				msg += "\n  " + f.Field + ": " + f.Message
			}
			return b, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, msg)
		}
		return b, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

func runDeploy(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	fs := flags("deploy", stderr)
	admin := adminFlag(fs, env)
	merge := fs.Bool("merge", false, "apply each application of FILE on its own; leave every other application as it is")
	ifAbsent := fs.Bool("if-absent", false, "add each application of FILE only if none of that name exists; replace and delete nothing (a one-shot example deployer)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (*merge && *ifAbsent) {
		return errors.New("usage: jetserve deploy FILE [--merge | --if-absent] [--admin URL]")
	}
	body, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var out struct {
		Applications []string `json:"applications"`
		Applied      *bool    `json:"applied"`
		Message      string   `json:"message"`
	}
	if !*merge && !*ifAbsent {
		b, err := do(ctx, *admin.key, http.MethodPut, *admin.url+"/api/serve/applications", body, "application/yaml")
		if err != nil {
			return err
		}
		_ = json.Unmarshal(b, &out)
		fmt.Fprintf(stdout, "deployed: %s\n", strings.Join(out.Applications, ", "))
		return nil
	}
	// --merge and --if-absent, one application at a time: the file is
	// checked here first, so that nothing is applied from a file with an
	// error in its third application.
	cfg, err := config.Parse(body)
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	for _, a := range cfg.Applications {
		one, err := json.Marshal(config.ServeConfig{Applications: []config.Application{a}})
		if err != nil {
			return fmt.Errorf("encode application %s: %w", a.Name, err)
		}
		target := *admin.url + "/api/serve/applications/" + url.PathEscape(a.Name)
		if *ifAbsent {
			target += "?if_absent=true"
		}
		b, err := do(ctx, *admin.key, http.MethodPut, target, one, "application/json")
		if err != nil {
			return fmt.Errorf("application %s: %w", a.Name, err)
		}
		out.Applied = nil
		_ = json.Unmarshal(b, &out)
		if out.Applied != nil && !*out.Applied {
			fmt.Fprintf(stdout, "kept: %s exists, left as it is (fleet: %s)\n", a.Name, strings.Join(out.Applications, ", "))
			continue
		}
		fmt.Fprintf(stdout, "deployed: %s (fleet: %s)\n", a.Name, strings.Join(out.Applications, ", "))
	}
	return nil
}

func runDelete(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	fs := flags("delete", stderr)
	admin := adminFlag(fs, env)
	all := fs.Bool("all", false, "delete every application")
	if err := fs.Parse(args); err != nil {
		return err
	}
	url := *admin.url + "/api/serve/applications"
	switch {
	case *all && fs.NArg() == 0:
	case !*all && fs.NArg() == 1:
		url += "/" + fs.Arg(0)
	default:
		return errors.New("usage: jetserve delete APP | --all [--admin URL]")
	}
	if _, err := do(ctx, *admin.key, http.MethodDelete, url, nil, ""); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "deleted")
	return nil
}

func runStatus(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	fs := flags("status", stderr)
	admin := adminFlag(fs, env)
	output := fs.StringP("output", "o", "table", "table or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := do(ctx, *admin.key, http.MethodGet, *admin.url+"/api/serve/applications", nil, "")
	if err != nil {
		return err
	}
	switch *output {
	case "json":
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("decode status: %w", err)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table":
		var st protocol.Status
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("decode status: %w", err)
		}
		// Jobs and live traffic come from the dashboard's document; a
		// scheduler without it (or not collecting yet) leaves them out.
		var dash *dashboardDoc
		if db, err := do(ctx, *admin.key, http.MethodGet, *admin.url+"/api/dashboard", nil, ""); err == nil {
			dash = &dashboardDoc{}
			if err := json.Unmarshal(db, dash); err != nil {
				return fmt.Errorf("decode dashboard: %w", err)
			}
		} else {
			fmt.Fprintf(stderr, "jobs and traffic not shown: %v\n", err)
		}
		writeStatusTable(stdout, st)
		writeOpsTables(stdout, st, dash)
		return nil
	}
	return fmt.Errorf("-o %q: want table or json", *output)
}

func writeStatusTable(w io.Writer, st protocol.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "leader: %s\n\n", st.Leader)
	fmt.Fprintln(tw, "APP\tROUTE\tSTATUS\tDEPLOYMENT\tDEP STATUS\tREPLICAS\tCUR/DES/TGT\tLAST SCALING\tMESSAGE")
	apps := slices.Sorted(maps.Keys(st.Applications))
	for _, n := range apps {
		a := st.Applications[n]
		deps := slices.Sorted(maps.Keys(a.Deployments))
		if len(deps) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\t\t%s\n", a.Name, a.RoutePrefix, a.Status, a.Message)
		}
		for i, dn := range deps {
			d := a.Deployments[dn]
			running := 0
			for _, r := range d.Replicas {
				if r.State == protocol.ReplicaRunning {
					running++
				}
			}
			msg := d.Message
			if msg == "" {
				msg = a.Message
			}
			if p := processSummary(d); p != "" {
				msg += " [" + p + "]"
			}
			app, route, status := a.Name, a.RoutePrefix, string(a.Status)
			if i > 0 {
				app, route, status = "", "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d running\t%d/%d/%d\t%s\t%s\n", app, route, status, d.Name, d.Status,
				running, d.TargetReplicas, d.CurrentReplicas, d.DesiredReplicas, d.TargetReplicas, lastScaling(d.Autoscaling, st.UpdatedAt), msg)
		}
	}
	writeSplits(tw, st, apps)
	fmt.Fprintln(tw, "\nWORKER\tCPU\tMEMORY\tGPUS\tREPLICAS")
	for _, wk := range st.Workers {
		fmt.Fprintf(tw, "%s\t%.2f/%.2f\t%s/%s\t%d\t%d\n", wk.ID, wk.CPUUsed, wk.CPU, human(wk.MemUsed), human(wk.Memory), len(wk.GPUs), wk.Replicas)
	}
	_ = tw.Flush()
}

// writeSplits lists the graphs' splitters: each branch's configured
// weight and its live share of the last window's requests.
func writeSplits(tw io.Writer, st protocol.Status, apps []string) {
	header := false
	for _, n := range apps {
		g := st.Applications[n].Graph
		if g == nil {
			continue
		}
		for _, s := range g.Splitters {
			if !header {
				fmt.Fprintln(tw, "\nSPLIT\tBRANCH\tTARGET\tWEIGHT\tLIVE SHARE\tREQUESTS")
				header = true
			}
			for i, b := range s.Branches {
				name := ""
				if i == 0 {
					name = n + "/" + s.Node
				}
				share := "-"
				if s.Requests > 0 {
					share = fmt.Sprintf("%.1f%%", b.Share)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d%%\t%s\t%d in %ds\n", name, b.Step, b.Target, b.Weight, share, b.Requests, s.WindowSeconds)
			}
		}
	}
}

// processSummary sums up the child processes of a process-runtime
// deployment's replicas: restarts and the latest exit ("" for a
// deployment without child processes).
func processSummary(d protocol.DeploymentStatus) string {
	var restarts int
	var last *protocol.ProcessStatus
	seen := false
	for _, r := range d.Replicas {
		if r.Process == nil {
			continue
		}
		seen = true
		restarts += r.Process.Restarts
		if r.Process.LastExit != "" && (last == nil || r.Process.LastExitAt.After(last.LastExitAt)) {
			last = r.Process
		}
	}
	if !seen {
		return ""
	}
	s := fmt.Sprintf("process restarts: %d", restarts)
	if last != nil {
		s += ", last exit: " + last.LastExit
	}
	return s
}

// lastScaling is the autoscaler's last decision as "upscale 12s ago"
// ("-" for a deployment that is not autoscaled, "none yet" before the
// first decision).
func lastScaling(a *protocol.AutoscalingStatus, now time.Time) string {
	switch {
	case a == nil:
		return "-"
	case a.LastReason == "":
		return "none yet"
	case a.LastDecisionAt.IsZero() || now.IsZero():
		return string(a.LastReason)
	}
	return fmt.Sprintf("%s %s ago", a.LastReason, max(0, now.Sub(a.LastDecisionAt)).Round(time.Second))
}

func human(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ci", float64(b)/float64(div), "KMGTPE"[exp])
}

func runCall(ctx context.Context, args []string, env map[string]string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flags("call", stderr)
	def := env["JETSERVE_URL"]
	if def == "" {
		def = "http://127.0.0.1:8000"
	}
	base := fs.String("url", def, "ingress URL")
	key := apiKeyFlag(fs, env)
	method := fs.StringP("request", "X", "", "HTTP method (default POST with a body, GET without)")
	stream := fs.Bool("stream", false, "ask for a streamed answer and print chunks as they come")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return errors.New("usage: jetserve call ROUTE [BODY|-] [--url URL]")
	}
	route := fs.Arg(0)
	if !strings.HasPrefix(route, "/") {
		route = "/" + route
	}
	var body io.Reader
	m := http.MethodGet
	if fs.NArg() == 2 {
		m = http.MethodPost
		if fs.Arg(1) == "-" {
			body = stdin
		} else {
			body = strings.NewReader(fs.Arg(1))
		}
	}
	if *method != "" {
		m = *method
	}
	req, err := http.NewRequestWithContext(ctx, m, strings.TrimSuffix(*base, "/")+route, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if *stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	authorize(req, *key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("call %s: %w", route, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 400 {
		return fmt.Errorf("call %s: %s", route, resp.Status)
	}
	return nil
}
