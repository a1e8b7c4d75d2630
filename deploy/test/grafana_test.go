package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricRE matches a jetserve metric name in a PromQL expression. Every
// series jetserve exports starts with "jetserve_"; no label, function or
// keyword does, so the matches are exactly the metric names queried.
var metricRE = regexp.MustCompile(`\bjetserve_[a-zA-Z0-9_:]+`)

// grafanaQueries returns every PromQL string of the dashboard (panel
// targets, variable queries) by where it is, failing on a panel without
// one.
func grafanaQueries(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if d.UID == "" {
		t.Errorf("%s: no uid (provisioning needs a stable one)", path)
	}
	out := map[string]string{}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if titles[p.Title] {
			t.Errorf("%s: two panels titled %q", path, p.Title)
		}
		titles[p.Title] = true
		if len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", path, p.Title)
		}
		for i, tg := range p.Targets {
			out[fmt.Sprintf("panel %q target %d", p.Title, i)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("%s: variable %s: query: %v", path, v.Name, err)
		}
		out["variable "+v.Name] = q.Query
	}
	return out
}

// scrape reads one /metrics and returns its metric family names.
func scrape(url string) (map[string]bool, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s/metrics: %w", url, err)
	}
	names := map[string]bool{}
	for name, mf := range fams {
		names[name] = true
		if mf.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		}
	}
	return names, nil
}

// labelVocabulary maps a label name jetserve must not use to the one it
// uses instead: one vocabulary across services, so one dashboard filter
// ($application) selects every series of an application.
var labelVocabulary = map[string]string{"app": "application", "dep": "deployment", "replica_id": "replica"}

// lintMetrics runs on one /metrics exposition what `promtool check
// metrics` runs (promlint: base units, _total on counters only, no type
// in names, help text, snake_case) and checks jetserve's label
// vocabulary. It returns one line per problem.
func lintMetrics(exposition io.Reader) ([]string, error) {
	b, err := io.ReadAll(exposition)
	if err != nil {
		return nil, err
	}
	problems, err := promlint.New(bytes.NewReader(b)).Lint()
	if err != nil {
		return nil, fmt.Errorf("lint: %w", err)
	}
	var out []string
	for _, p := range problems {
		out = append(out, fmt.Sprintf("%s: %s", p.Metric, p.Text))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	for name, mf := range fams {
		seen := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if use, bad := labelVocabulary[l.GetName()]; bad && !seen[l.GetName()] {
					seen[l.GetName()] = true
					out = append(out, fmt.Sprintf("%s: label %q, want %q", name, l.GetName(), use))
				}
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// TestLintMetricsCatchesViolations: the lint the fleet's scrape goes
// through fails on each kind of name this repository once exported.
func TestLintMetricsCatchesViolations(t *testing.T) {
	for _, tc := range []struct{ name, exposition, want string }{
		{"milliseconds", "# HELP jetserve_x_latency_ms x\n# TYPE jetserve_x_latency_ms histogram\njetserve_x_latency_ms_bucket{le=\"+Inf\"} 1\njetserve_x_latency_ms_sum 1\njetserve_x_latency_ms_count 1\n", "abbreviated units"},
		{"counter in name", "# HELP jetserve_x_counter_total x\n# TYPE jetserve_x_counter_total counter\njetserve_x_counter_total 1\n", "should not include type 'counter'"},
		{"gauge with _total", "# HELP jetserve_x_total x\n# TYPE jetserve_x_total gauge\njetserve_x_total 1\n", `non-counter metrics should not have "_total" suffix`},
		{"counter without _total", "# HELP jetserve_x x\n# TYPE jetserve_x counter\njetserve_x 1\n", `counter metrics should have "_total" suffix`},
		{"app label", "# HELP jetserve_x_total x\n# TYPE jetserve_x_total counter\njetserve_x_total{app=\"a\"} 1\n", `label "app", want "application"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lintMetrics(strings.NewReader(tc.exposition))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(got, "\n"), tc.want) {
				t.Errorf("lintMetrics = %q, want a problem %q", got, tc.want)
			}
		})
	}
	got, err := lintMetrics(strings.NewReader("# HELP jetserve_x_seconds x\n# TYPE jetserve_x_seconds gauge\njetserve_x_seconds{application=\"a\"} 1\n"))
	if err != nil || len(got) != 0 {
		t.Errorf("lintMetrics(a conforming gauge) = %q, %v, want no problem", got, err)
	}
}

// TestGrafanaQueriesNameRealMetrics runs the five services in-process,
// drives every kind of traffic (sync, errors, a router timeout, a
// multiplexed model, an async job, a workflow run, autoscaling), scrapes each /metrics and
// checks that every metric deploy/grafana/jetserve.json queries is
// exported — so renaming a metric without the dashboard fails here — and
// that every service's /metrics passes lintMetrics (promtool's check).
func TestGrafanaQueriesNameRealMetrics(t *testing.T) {
	queries := grafanaQueries(t, "../grafana/jetserve.json")
	want := map[string][]string{} // metric → where it is queried
	for where, q := range queries {
		names := metricRE.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q queries no jetserve metric", where, q)
		}
		for _, n := range names {
			want[n] = append(want[n], where)
		}
	}
	if len(want) < 30 {
		t.Fatalf("the dashboard queries %d metrics, want the fleet's (≥ 30)", len(want))
	}

	f := startFleet(t, "testdata/fleet.yaml")
	f.waitServing(t)
	// An error answered by the ingress, a handler error and a router
	// timeout (504).
	if _, err := f.do(http.MethodGet, f.ingress+"/nowhere", "", nil); err == nil {
		t.Error("GET /nowhere succeeded, want 404")
	}
	if _, err := f.do(http.MethodPost, f.ingress+"/echo/?fail=1", "x", nil); err == nil {
		t.Error("an echo with fail=1 succeeded, want a handler error")
	}
	if _, err := f.do(http.MethodPost, f.ingress+"/echo/?delay_ms=2000", "slow", nil); err == nil {
		t.Error("a 2 s echo under request_timeout 200ms succeeded, want 504")
	}
	// One job, to its end; one workflow run, to its end.
	f.trainJob(t, "g1")
	f.asyncToEnd(t, "/trips/book", "g2", "", `{"trip_id": "g2"}`)

	f.waitFor(t, 60*time.Second, "every queried metric on some /metrics", func() error {
		have := map[string]bool{}
		for svc, url := range f.ops {
			names, err := scrape(url)
			if err != nil {
				return fmt.Errorf("%s: %w", svc, err)
			}
			for n := range names {
				have[n] = true
			}
		}
		var missing []string
		for n, where := range want {
			if !have[n] {
				missing = append(missing, fmt.Sprintf("%s (%s)", n, strings.Join(slices.Sorted(slices.Values(where)), "; ")))
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return fmt.Errorf("queried but exported by no service: %s", strings.Join(missing, ", "))
		}
		return nil
	})

	for svc, url := range f.ops {
		resp, err := http.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		problems, err := lintMetrics(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", svc, err)
		}
		for _, p := range problems {
			t.Errorf("%s /metrics: %s", svc, p)
		}
	}
}
