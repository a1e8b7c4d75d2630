package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// dashboardDoc is the part of the scheduler's GET /api/dashboard that
// `jetserve status` shows.
type dashboardDoc struct {
	GeneratedAt  time.Time `json:"generated_at"`
	RateSeconds  float64   `json:"rate_seconds"`
	Applications []struct {
		Name        string `json:"name"`
		Deployments []struct {
			Name    string `json:"name"`
			Traffic struct {
				RPS     float64 `json:"rps"`
				P95MS   float64 `json:"p95_ms"`
				Ongoing int     `json:"ongoing"`
				Queued  int     `json:"queued"`
			} `json:"traffic"`
		} `json:"deployments"`
	} `json:"applications"`
	Jobs []struct {
		App              string  `json:"app"`
		Deployment       string  `json:"deployment"`
		Method           string  `json:"method"`
		Queued           int     `json:"queued"`
		Running          int     `json:"running"`
		Succeeded        int     `json:"succeeded"`
		Failed           int     `json:"failed"`
		Cancelled        int     `json:"cancelled"`
		Workflow         bool    `json:"workflow"`
		Suspended        int     `json:"suspended"`
		DeadLettered     int     `json:"dead_lettered"`
		OldestAgeSeconds float64 `json:"oldest_age_seconds"`
		Error            string  `json:"error"`
	} `json:"jobs"`
}

// writeOpsTables writes the jobs and autoscaling sections of `jetserve
// status`: per async method its queue and outcomes, per autoscaled
// deployment its replica counts, bounds, load and last decision. dash may
// be nil (then only what the status holds is shown).
func writeOpsTables(w io.Writer, st protocol.Status, dash *dashboardDoc) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush() //nolint:errcheck
	if dash != nil {
		fmt.Fprintln(tw, "\nJOBS\tDEPLOYMENT\tQUEUED\tRUNNING\tSUSPENDED\tSUCCEEDED\tFAILED\tDEAD-LETTERED\tCANCELLED\tOLDEST QUEUED")
		if len(dash.Jobs) == 0 {
			fmt.Fprintln(tw, "(no async method)")
		}
		for _, j := range dash.Jobs {
			oldest := "-"
			if j.OldestAgeSeconds > 0 {
				oldest = (time.Duration(j.OldestAgeSeconds * float64(time.Second))).Round(time.Second).String()
			}
			if j.Error != "" {
				oldest += " (poll failed: " + j.Error + ")"
			}
			name, suspended := j.App+"/"+j.Method, "-"
			if j.Workflow {
				name += " (workflow)"
				suspended = fmt.Sprint(j.Suspended)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%s\n", name, j.Deployment, j.Queued, j.Running,
				suspended, j.Succeeded, j.Failed, j.DeadLettered, j.Cancelled, oldest)
		}
	}
	type row struct {
		app, dep string
		d        protocol.DeploymentStatus
	}
	var rows []row
	for _, a := range st.Applications {
		for _, d := range a.Deployments {
			if d.Autoscaling != nil {
				rows = append(rows, row{a.Name, d.Name, d})
			}
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		return rows[i].app+"/"+rows[i].dep < rows[j].app+"/"+rows[j].dep
	})
	traffic := map[string]string{}
	if dash != nil {
		for _, a := range dash.Applications {
			for _, d := range a.Deployments {
				t := d.Traffic
				traffic[a.Name+"/"+d.Name] = fmt.Sprintf("%.1f req/s, p95 %.1f ms, %d ongoing, %d queued", t.RPS, t.P95MS, t.Ongoing, t.Queued)
			}
		}
	}
	fmt.Fprintln(tw, "\nAUTOSCALING\tCUR/DES/TGT\tBOUNDS\tTARGET/REPLICA\tLOAD\tLAST DECISION\tREASON\tTRAFFIC")
	if len(rows) == 0 {
		fmt.Fprintln(tw, "(no autoscaled deployment)")
	}
	for _, r := range rows {
		as := r.d.Autoscaling
		msg := as.LastMessage
		if msg == "" {
			msg = "-"
		}
		tr := traffic[r.app+"/"+r.dep]
		if tr == "" {
			tr = "-"
		}
		fmt.Fprintf(tw, "%s/%s\t%d/%d/%d\t%d..%d\t%g\t%.2f\t%s\t%s\t%s\n", r.app, r.dep, r.d.CurrentReplicas,
			r.d.DesiredReplicas, r.d.TargetReplicas, as.MinReplicas, as.MaxReplicas, as.TargetOngoingRequests, as.Load,
			lastScaling(as, st.UpdatedAt), strings.ReplaceAll(msg, "\t", " "), tr)
	}
}
