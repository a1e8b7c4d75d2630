package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/pkg/jobs"
)

const jobsUsage = `Usage:
  jetserve jobs submit ROUTE/METHOD [KEY=VALUE ...] [--id ID] [--id-key KEY] [--body JSON|-]
  jetserve jobs status ROUTE/METHOD ID
  jetserve jobs result ROUTE/METHOD ID
  jetserve jobs cancel ROUTE/METHOD ID
  jetserve jobs list   ROUTE/METHOD [--status S] [--limit N] [--cursor C]
  jetserve jobs watch  ROUTE/METHOD ID [--interval D]
  jetserve jobs dead-letters APP METHOD [--nats URL] [--prefix P]
  jetserve jobs requeue      APP METHOD ID [--nats URL] [--prefix P]

ROUTE/METHOD is the application's route prefix and the async method, e.g.
text/train. Every command takes --url (default $JETSERVE_URL or
http://127.0.0.1:8000) and -o json for the raw answer. dead-letters and
requeue are operator commands that talk to NATS directly (default
$JETSERVE_NATS_URL or nats://127.0.0.1:4222).
`

// jobRecord is a job's record as the ingress answers it.
type jobRecord struct{ jobs.Record }

func (r jobRecord) terminal() bool { return r.Status.Terminal() }

func (r jobRecord) state() string {
	s := string(r.Status)
	if r.Retrying {
		s += fmt.Sprintf(" (retrying, attempt %d/%d)", r.Attempts, r.MaxAttempts)
	}
	if r.CancelRequested && !r.terminal() {
		s += " (cancel requested)"
	}
	return s
}

// jobsClient talks to one async method's endpoints on the ingress.
type jobsClient struct {
	base string // http://host:port/route/method
	key  string // the API key or bearer token, "" for none
}

// answer is an HTTP answer: status and body.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (c jobsClient) do(ctx context.Context, method, sub string, q url.Values, body []byte) (answer, error) {
	u := c.base + sub
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return answer{}, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	authorize(req, c.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("read answer: %w", err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// fail turns a refusal into an error carrying the ingress's message.
func (a answer) fail(what string) error {
	var ae apiError
	msg := strings.TrimSpace(string(a.body))
	if json.Unmarshal(a.body, &ae) == nil && ae.Message != "" {
		msg = ae.Message
	}
	s := fmt.Sprintf("%s: %d %s", what, a.status, msg)
	if ra := a.header.Get("Retry-After"); ra != "" {
		s += " (retry after " + ra + "s)"
	}
	return errors.New(s)
}

func runJobs(ctx context.Context, args []string, env map[string]string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, jobsUsage)
		if len(args) == 0 {
			return errors.New("a jobs command is required")
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	if sub == "dead-letters" || sub == "requeue" {
		return runDLQ(ctx, sub, rest, env, stdout, stderr)
	}
	fs := flags("jobs "+sub, stderr)
	def := env["JETSERVE_URL"]
	if def == "" {
		def = "http://127.0.0.1:8000"
	}
	base := fs.String("url", def, "ingress URL")
	key := apiKeyFlag(fs, env)
	output := fs.StringP("output", "o", "text", "text or json")
	id := fs.String("id", "", "submit: the request id (idempotency key); default: generated")
	idKey := fs.String("id-key", "request_id", "submit: the argument that carries --id (the method's idempotency_key)")
	body := fs.String("body", "", `submit: JSON object of arguments ("-" reads stdin); fields win over KEY=VALUE`)
	status := fs.String("status", "", "list: only jobs in this status (QUEUED, RUNNING, SUSPENDED, SUCCEEDED, FAILED, CANCELLED)")
	limit := fs.Int("limit", 0, "list: at most this many (default: the ingress's, 100)")
	cursor := fs.String("cursor", "", "list: the next_cursor of the previous page")
	interval := fs.Duration("interval", time.Second, "watch: how often to poll")
	signal := fs.String("name", "", "signal: the signal's name")
	sigKey := fs.String("key", "", "signal: its idempotency key (a repeat with the same key sends nothing)")
	payload := fs.String("payload", "", `signal: its JSON payload ("-" reads stdin)`)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("-o %q: want text or json", *output)
	}
	pos := fs.Args()
	if len(pos) == 0 {
		fmt.Fprint(stderr, jobsUsage)
		return fmt.Errorf("jobs %s: ROUTE/METHOD is required", sub)
	}
	route := "/" + strings.Trim(pos[0], "/")
	c := jobsClient{base: strings.TrimSuffix(*base, "/") + route, key: *key}
	js := *output == "json"
	needID := func() (string, error) {
		if len(pos) != 2 {
			return "", fmt.Errorf("usage: jetserve jobs %s ROUTE/METHOD ID", sub)
		}
		return pos[1], nil
	}
	switch sub {
	case "submit":
		return jobSubmit(ctx, c, pos[1:], *id, *idKey, *body, stdin, js, stdout)
	case "status", "cancel":
		jid, err := needID()
		if err != nil {
			return err
		}
		method, path := http.MethodGet, "/status"
		if sub == "cancel" {
			method, path = http.MethodPost, "/cancel"
		}
		a, err := c.do(ctx, method, path, url.Values{"request_id": {jid}}, nil)
		if err != nil {
			return err
		}
		if a.status != http.StatusOK {
			return a.fail("jobs " + sub + " " + jid)
		}
		if js {
			return printIndented(stdout, a.body)
		}
		var r jobRecord
		if err := json.Unmarshal(a.body, &r); err != nil {
			return fmt.Errorf("decode record: %w", err)
		}
		writeRecord(stdout, r)
		return nil
	case "result":
		jid, err := needID()
		if err != nil {
			return err
		}
		a, err := c.do(ctx, http.MethodGet, "/result", url.Values{"request_id": {jid}}, nil)
		if err != nil {
			return err
		}
		switch a.status {
		case http.StatusOK:
			return printIndented(stdout, a.body)
		case http.StatusAccepted:
			var r jobRecord
			_ = json.Unmarshal(a.body, &r)
			return fmt.Errorf("jobs result %s: not finished: %s", jid, r.state())
		}
		return a.fail("jobs result " + jid)
	case "list":
		if len(pos) != 1 {
			return errors.New("usage: jetserve jobs list ROUTE/METHOD [--status S] [--limit N] [--cursor C]")
		}
		q := url.Values{}
		if *status != "" {
			q.Set("filter_status", strings.ToUpper(*status))
		}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		if *cursor != "" {
			q.Set("cursor", *cursor)
		}
		a, err := c.do(ctx, http.MethodGet, "/list", q, nil)
		if err != nil {
			return err
		}
		if a.status != http.StatusOK {
			return a.fail("jobs list")
		}
		if js {
			return printIndented(stdout, a.body)
		}
		var page struct {
			Requests   []jobRecord `json:"requests"`
			NextCursor string      `json:"next_cursor"`
		}
		if err := json.Unmarshal(a.body, &page); err != nil {
			return fmt.Errorf("decode list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REQUEST ID\tSTATUS\tATTEMPTS\tPROGRESS\tCREATED\tMESSAGE")
		for _, r := range page.Requests {
			msg := r.Message
			if r.Error != "" {
				msg = r.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%3.0f%%\t%s\t%s\n", r.ID, r.state(), r.Attempts, 100*r.Progress,
				r.CreatedAt.Local().Format(time.DateTime), msg)
		}
		_ = tw.Flush()
		if page.NextCursor != "" {
			fmt.Fprintf(stdout, "more: --cursor %s\n", page.NextCursor)
		}
		return nil
	case "history":
		jid, err := needID()
		if err != nil {
			return err
		}
		return workflowHistory(ctx, c, jid, js, stdout)
	case "signal":
		jid, err := needID()
		if err != nil {
			return err
		}
		return workflowSignal(ctx, c, jid, *signal, *sigKey, *payload, stdin, js, stdout)
	case "watch":
		jid, err := needID()
		if err != nil {
			return err
		}
		if *interval <= 0 {
			return errors.New("--interval: must be positive")
		}
		return jobWatch(ctx, c, jid, *interval, js, stdout)
	}
	fmt.Fprint(stderr, jobsUsage)
	return fmt.Errorf("unknown jobs command %q", sub)
}

// readBody is a --body or --payload value: "" none, "-" stdin, else the
// text; it must be JSON.
func readBody(flag, v string, stdin io.Reader) ([]byte, error) {
	var b []byte
	switch v {
	case "":
		return nil, nil
	case "-":
		var err error
		if b, err = io.ReadAll(stdin); err != nil {
			return nil, fmt.Errorf("read %s: %w", flag, err)
		}
	default:
		b = []byte(v)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("%s: not valid JSON", flag)
	}
	return b, nil
}

func jobSubmit(ctx context.Context, c jobsClient, kvs []string, id, idKey, body string, stdin io.Reader, js bool, stdout io.Writer) error {
	q := url.Values{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("argument %q: want KEY=VALUE", kv)
		}
		q.Add(k, v)
	}
	if id != "" {
		q.Set(idKey, id)
	}
	b, err := readBody("--body", body, stdin)
	if err != nil {
		return err
	}
	a, err := c.do(ctx, http.MethodPost, "", q, b)
	if err != nil {
		return err
	}
	if a.status != http.StatusAccepted && a.status != http.StatusOK {
		return a.fail("jobs submit")
	}
	if js {
		return printIndented(stdout, a.body)
	}
	var r jobRecord
	if err := json.Unmarshal(a.body, &r); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	if a.status == http.StatusOK {
		fmt.Fprintf(stdout, "%s already exists: %s\n", r.ID, r.state())
		return nil
	}
	fmt.Fprintf(stdout, "%s %s\n", r.ID, r.state())
	return nil
}

// jobWatch polls the status until the job ends, printing each change; a
// job that ends FAILED or CANCELLED is an error.
func jobWatch(ctx context.Context, c jobsClient, id string, every time.Duration, js bool, stdout io.Writer) error {
	var last string
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		a, err := c.do(ctx, http.MethodGet, "/status", url.Values{"request_id": {id}}, nil)
		if err != nil {
			return err
		}
		if a.status != http.StatusOK {
			return a.fail("jobs watch " + id)
		}
		var r jobRecord
		if err := json.Unmarshal(a.body, &r); err != nil {
			return fmt.Errorf("decode record: %w", err)
		}
		line := fmt.Sprintf("%s %3.0f%% attempt %d %s", r.state(), 100*r.Progress, r.Attempts, r.Message)
		if js {
			line = string(bytes.TrimSpace(a.body))
		}
		if line != last {
			fmt.Fprintf(stdout, "%s %s\n", time.Now().Format(time.TimeOnly), strings.TrimSpace(line))
			last = line
		}
		if r.terminal() {
			switch r.Status {
			case "SUCCEEDED":
				return nil
			case "FAILED":
				return fmt.Errorf("job %s FAILED after %d attempts: %s", id, r.Attempts, r.Error)
			}
			return fmt.Errorf("job %s CANCELLED", id)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func writeRecord(w io.Writer, r jobRecord) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "request_id:\t%s\n", r.ID)
	fmt.Fprintf(tw, "status:\t%s\n", r.state())
	fmt.Fprintf(tw, "attempts:\t%d/%d\n", r.Attempts, r.MaxAttempts)
	fmt.Fprintf(tw, "progress:\t%.0f%% %s\n", 100*r.Progress, r.Message)
	if r.Error != "" {
		fmt.Fprintf(tw, "error:\t%s\n", r.Error)
	}
	if r.Worker != "" || r.Replica != "" {
		fmt.Fprintf(tw, "worker:\t%s (replica %s)\n", r.Worker, r.Replica)
	}
	for _, ts := range []struct {
		name string
		t    time.Time
	}{{"created", r.CreatedAt}, {"started", r.StartedAt}, {"finished", r.FinishedAt}} {
		if !ts.t.IsZero() {
			fmt.Fprintf(tw, "%s:\t%s\n", ts.name, ts.t.Local().Format(time.RFC3339))
		}
	}
	_ = tw.Flush()
}

func printIndented(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(b), "", "  "); err != nil {
		_, err = w.Write(b)
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}
