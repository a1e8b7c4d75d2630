// Command jetserve-auth generates jetserve's NATS accounts and per-service
// credentials (package auth) and the HTTP API keys, into a directory that
// nats-server, the services and the CLI read:
//
//	jetserve-auth --out deploy/secrets [--prefix jetserve] [--force] [--routes nats1:6222,nats2:6222,nats3:6222]
//	              [--workers w1,w2 | --worker w1 --worker w2]
//
// Run again, it completes the directory and keeps what exists.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/jetserve/jetserve/pkg/service"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "jetserve-auth:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("jetserve-auth", flag.ContinueOnError)
	out := fl.String("out", "", "directory to write (created; existing files are kept)")
	prefix := fl.String("prefix", "jetserve", "the fleet's nats.prefix")
	force := fl.Bool("force", false, "regenerate everything: every credential given out before stops working")
	var revoke []string
	fl.Func("revoke", "revoke a user: its public key (U…, the JWT's sub); repeatable; reload nats-server after", func(v string) error {
		revoke = append(revoke, v)
		return nil
	})
	var routes []string
	fl.Func("routes", "a NATS cluster's route addresses, HOST:PORT, comma-separated: writes nats/routes.conf (route credential and routes) for every node to include in its cluster {} block", func(v string) error {
		for _, r := range strings.Split(v, ",") {
			if r = strings.TrimSpace(r); r != "" {
				routes = append(routes, r)
			}
		}
		return nil
	})
	var workers []string
	addWorkers := func(v string) error {
		for _, w := range strings.Split(v, ",") {
			if w = strings.TrimSpace(w); w != "" {
				workers = append(workers, w)
			}
		}
		return nil
	}
	fl.Func("workers", "worker ids, comma-separated: one NATS user each (creds/workers/<id>.creds), allowed only that worker's assignment, registration and replicas", addWorkers)
	fl.Func("worker", "a worker id (repeatable): as --workers", addWorkers)
	chown := fl.String("chown", "", "UID:GID to give every file written (the services' user in containers, 65532:65532)")
	version := fl.Bool("version", false, "print the version and exit")
	fl.SetOutput(stdout)
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the usage was printed
		}
		return err
	}
	if *version {
		fmt.Fprintln(stdout, "jetserve-auth", service.Version())
		return nil
	}
	if *out == "" {
		return fmt.Errorf("--out is required")
	}
	g, err := auth.Generate(auth.Options{Dir: *out, Prefix: *prefix, Force: *force, Revoke: revoke, Routes: routes, Workers: workers})
	if err != nil {
		return err
	}
	if *chown != "" {
		if err := chownAll(*out, *chown); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "operator %s, account %s %s\n", g.OperatorPub, auth.AccountName, g.AccountPub)
	fmt.Fprintf(stdout, "nats-server: include %s\n", filepath.Join(*out, auth.AuthConf))
	if g.RoutesConf != "" {
		fmt.Fprintf(stdout, "nats-server cluster {}: include %s (routes to %s)\n", g.RoutesConf, strings.Join(routes, ", "))
	}
	for _, r := range slices.Sorted(maps.Keys(g.Creds)) {
		fmt.Fprintf(stdout, "  %-10s nats.creds=%s\n", r, g.Creds[r])
	}
	for _, id := range slices.Sorted(maps.Keys(g.Workers)) {
		fmt.Fprintf(stdout, "  worker %-6s nats.creds=%s\n", id, g.Workers[id])
	}
	fmt.Fprintf(stdout, "ingress auth.keys_file=%s\nscheduler auth.keys_file=%s\n",
		filepath.Join(*out, auth.IngressKeys), filepath.Join(*out, auth.AdminKeys))
	if g.APIKey != "" {
		fmt.Fprintf(stdout, "new HTTP keys (shown once) in %s\n", filepath.Join(*out, auth.HTTPKeysEnv))
	}
	return nil
}

// chownAll gives dir and everything in it to uid:gid.
func chownAll(dir, spec string) error {
	u, g, ok := strings.Cut(spec, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("--chown %q: want UID:GID", spec)
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}
