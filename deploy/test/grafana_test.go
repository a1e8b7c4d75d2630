package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

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

// TestGrafanaQueriesNameRealMetrics runs the five services in-process,
// drives every kind of traffic (sync, errors, a router timeout, a
// multiplexed model, an async job, autoscaling), scrapes each /metrics and
// checks that every metric deploy/grafana/jetserve.json queries is
// exported — so renaming a metric without the dashboard fails here.
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
	// One job, to its end.
	f.trainJob(t, "g1")

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
}
