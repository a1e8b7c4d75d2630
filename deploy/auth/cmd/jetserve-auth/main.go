// Command jetserve-auth generates jetserve's NATS accounts and per-service
// credentials (package auth) and the HTTP API keys, into a directory that
// nats-server, the services and the CLI read:
//
//	jetserve-auth --out deploy/secrets [--prefix jetserve] [--force]
//
// Run again, it completes the directory and keeps what exists.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/jetserve/jetserve/deploy/auth"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "jetserve-auth:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("jetserve-auth", flag.ContinueOnError)
	out := fs.String("out", "", "directory to write (created; existing files are kept)")
	prefix := fs.String("prefix", "jetserve", "the fleet's nats.prefix")
	force := fs.Bool("force", false, "regenerate everything: every credential given out before stops working")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("--out is required")
	}
	g, err := auth.Generate(auth.Options{Dir: *out, Prefix: *prefix, Force: *force})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "operator %s, account %s %s\n", g.OperatorPub, auth.AccountName, g.AccountPub)
	fmt.Fprintf(stdout, "nats-server: include %s\n", filepath.Join(*out, auth.AuthConf))
	roles := make([]string, 0, len(g.Creds))
	for r := range g.Creds {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	for _, r := range roles {
		fmt.Fprintf(stdout, "  %-10s nats.creds=%s\n", r, g.Creds[r])
	}
	fmt.Fprintf(stdout, "ingress auth.keys_file=%s\nscheduler auth.keys_file=%s\n",
		filepath.Join(*out, auth.IngressKeys), filepath.Join(*out, auth.AdminKeys))
	if g.APIKey != "" {
		fmt.Fprintf(stdout, "new HTTP keys (shown once) in %s\n", filepath.Join(*out, auth.HTTPKeysEnv))
	}
	return nil
}
