package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jetserve/jetserve/pkg/httpauth"
)

const keysUsage = `jetserve keys — API keys for the ingress and the admin API

  jetserve keys new --name NAME [--apps A,B | --apps '*'] [--operator] [--admin | --admin-read]
      makes a random key, prints it once, and prints the line for the keys
      file (its SHA-256: the key itself is stored nowhere). Ingress keys name
      their applications; --operator sees every caller's jobs. Admin keys
      (--admin, --admin-read) go in the scheduler's keys file.
  jetserve keys hash < KEY
      prints the SHA-256 of a key read from stdin (to list an existing key)

The files are re-read when they change: adding, rotating or removing a key
needs no restart (auth.keys_file of the ingress and of the scheduler).
`

func runKeys(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, keysUsage)
		if len(args) == 0 {
			return errors.New("a keys command is required")
		}
		return nil
	}
	switch args[0] {
	case "new":
		fs := flags("keys new", stderr)
		name := fs.String("name", "", "the key's name: the principal its requests and jobs belong to")
		apps := fs.StringSlice("apps", nil, "applications the key may call through the ingress ('*' = all)")
		operator := fs.Bool("operator", false, "ingress: see, wait for and cancel every caller's jobs")
		admin := fs.Bool("admin", false, "admin API: every call")
		adminRead := fs.Bool("admin-read", false, "admin API: reads only (status, config, dashboard)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		var scopes []string
		if *operator {
			scopes = append(scopes, httpauth.ScopeOperator)
		}
		if *admin {
			scopes = append(scopes, httpauth.ScopeAdmin)
		}
		if *adminRead {
			scopes = append(scopes, httpauth.ScopeAdminRead)
		}
		if len(*apps) == 0 && len(scopes) == 0 {
			return errors.New("keys new: give --apps (an ingress key) or --admin/--admin-read (an admin key)")
		}
		key, sha, err := httpauth.NewKey()
		if err != nil {
			return err
		}
		line := httpauth.Line(*name, sha, *apps, scopes)
		// The line must parse: the name is checked here, not at the server.
		if _, err := httpauth.ParseKeys([]byte("keys:\n" + line + "\n")); err != nil {
			return fmt.Errorf("keys new: %w", err)
		}
		fmt.Fprintf(stdout, "key (give it to the client; it is shown once and stored nowhere):\n  %s\n", key)
		fmt.Fprintf(stdout, "line for the keys file (under keys:):\n%s\n", line)
		return nil
	case "hash":
		r := bufio.NewReader(stdin)
		key, err := r.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		key = strings.TrimSpace(key)
		if key == "" {
			return errors.New("keys hash: no key on stdin")
		}
		fmt.Fprintln(stdout, httpauth.Hash(key))
		return nil
	}
	fmt.Fprint(stderr, keysUsage)
	return fmt.Errorf("unknown keys command %q", args[0])
}
