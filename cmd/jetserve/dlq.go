package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// runDLQ serves `jobs dead-letters APP METHOD` and `jobs requeue APP
// METHOD ID`: operator commands that talk to NATS directly (the dead-letter
// stream is not exposed over the public HTTP API).
func runDLQ(ctx context.Context, sub string, args []string, env map[string]string, stdout, stderr io.Writer) error {
	fs := flags("jobs "+sub, stderr)
	def := env["JETSERVE_NATS_URL"]
	if def == "" {
		def = "nats://127.0.0.1:4222"
	}
	url := fs.String("nats", def, "NATS server URL ($JETSERVE_NATS_URL)")
	prefix := fs.String("prefix", protocol.DefaultPrefix, "the fleet's nats.prefix")
	output := fs.StringP("output", "o", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pos := fs.Args()
	want := 2
	if sub == "requeue" {
		want = 3
	}
	if len(pos) != want {
		return fmt.Errorf("usage: jetserve jobs dead-letters APP METHOD | jetserve jobs requeue APP METHOD ID [--nats URL]")
	}
	names, err := protocol.NewNames(*prefix)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*url, nats.Name("jetserve-cli"), nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	q := jobs.NewQueue(js, jobs.Names{Names: names}, zerolog.Nop())
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	app, method := pos[0], pos[1]
	if sub == "requeue" {
		rec, err := q.Requeue(ctx, app, method, pos[2])
		if err != nil {
			return fmt.Errorf("requeue %s: %w", pos[2], err)
		}
		fmt.Fprintf(stdout, "requeued %s: %s\n", rec.ID, rec.Status)
		return nil
	}
	recs, err := q.DeadLetters(ctx, app, method)
	if err != nil {
		if errors.Is(err, jobs.ErrUnknownMethod) {
			return fmt.Errorf("%s/%s has no job queue: %w", app, method, err)
		}
		return fmt.Errorf("dead letters: %w", err)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(recs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST ID\tATTEMPTS\tFINISHED\tERROR")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.ID, r.Attempts, r.FinishedAt.Format(time.RFC3339), r.Error)
	}
	return tw.Flush()
}
