package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
)

const workflowsUsage = `Usage:
  jetserve workflows start   ROUTE/WORKFLOW [KEY=VALUE ...] [--id ID] [--body JSON|-]
  jetserve workflows status  ROUTE/WORKFLOW ID
  jetserve workflows result  ROUTE/WORKFLOW ID
  jetserve workflows history ROUTE/WORKFLOW ID
  jetserve workflows signal  ROUTE/WORKFLOW ID --name NAME [--key KEY] [--payload JSON|-]
  jetserve workflows cancel  ROUTE/WORKFLOW ID
  jetserve workflows list    ROUTE/WORKFLOW [--status S] [--limit N] [--cursor C]
  jetserve workflows watch   ROUTE/WORKFLOW ID [--interval D]

A workflow's runs are async requests: start is a submit, and status,
result, cancel, list and watch are the jobs commands. history prints the
run's journal (each step with its attempts, timings and result or error);
signal sends a signal the run awaits (wf.Await), once per --key. Every
command takes --url (default $JETSERVE_URL or http://127.0.0.1:8000) and
-o json for the raw answer.
`

func runWorkflows(ctx context.Context, args []string, env map[string]string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, workflowsUsage)
		if len(args) == 0 {
			return errors.New("a workflows command is required")
		}
		return nil
	}
	switch args[0] {
	case "start":
		return runJobs(ctx, append([]string{"submit"}, args[1:]...), env, stdin, stdout, stderr)
	case "status", "result", "history", "signal", "cancel", "list", "watch":
		return runJobs(ctx, args, env, stdin, stdout, stderr)
	}
	fmt.Fprint(stderr, workflowsUsage)
	return fmt.Errorf("unknown workflows command %q", args[0])
}

func workflowHistory(ctx context.Context, c jobsClient, id string, js bool, stdout io.Writer) error {
	a, err := c.do(ctx, http.MethodGet, "/history", url.Values{"request_id": {id}}, nil)
	if err != nil {
		return err
	}
	if a.status != http.StatusOK {
		return a.fail("workflows history " + id)
	}
	if js {
		return printIndented(stdout, a.body)
	}
	var h struct {
		Status      string               `json:"status"`
		Waiting     []string             `json:"waiting"`
		Suspensions int                  `json:"suspensions"`
		Entries     []serve.JournalEntry `json:"entries"`
	}
	if err := json.Unmarshal(a.body, &h); err != nil {
		return fmt.Errorf("decode history: %w", err)
	}
	fmt.Fprintf(stdout, "%s %s", id, h.Status)
	if len(h.Waiting) > 0 {
		fmt.Fprintf(stdout, " waiting for %s", strings.Join(h.Waiting, ", "))
	}
	fmt.Fprintf(stdout, " (suspended %d times)\n", h.Suspensions)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POS\tKIND\tNAME\tATTEMPTS\tTOOK\tINPUT\tRESULT")
	for _, e := range h.Entries {
		took := "-"
		if !e.Started.IsZero() && !e.Finished.IsZero() {
			took = e.Finished.Sub(e.Started).Round(time.Microsecond).String()
		}
		res := string(e.Result)
		switch {
		case e.Error != "":
			res = "error: " + e.Error
		case e.Ref != "":
			res = "started " + e.Ref
		case !e.Wake.IsZero():
			res = "until " + e.Wake.Local().Format(time.RFC3339)
		}
		if len(res) > 60 {
			res = res[:57] + "..."
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%d\t%s\n", e.Pos, e.Kind, e.Name, e.Attempts, took, e.InputSize, res)
	}
	return tw.Flush()
}

func workflowSignal(ctx context.Context, c jobsClient, id, name, key, payload string, stdin io.Reader, js bool, stdout io.Writer) error {
	if name == "" {
		return errors.New("workflows signal: --name is required")
	}
	b, err := readBody("--payload", payload, stdin)
	if err != nil {
		return err
	}
	q := url.Values{"request_id": {id}, "name": {name}}
	if key != "" {
		q.Set("key", key)
	}
	a, err := c.do(ctx, http.MethodPost, "/signal", q, b)
	if err != nil {
		return err
	}
	if a.status != http.StatusAccepted {
		return a.fail("workflows signal " + id)
	}
	if js {
		return printIndented(stdout, a.body)
	}
	var r struct {
		Sent bool `json:"sent"`
	}
	if err := json.Unmarshal(a.body, &r); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	if !r.Sent {
		fmt.Fprintf(stdout, "signal %s to %s: already sent with key %s\n", name, id, key)
		return nil
	}
	fmt.Fprintf(stdout, "signal %s sent to %s\n", name, id)
	return nil
}
