// Command errgen writes the Go code of the error catalogue:
//
//	errgen -in ../../schemas/errors.json -out errors_gen.go
//
// protocol's `go generate` runs it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/jetserve/jetserve/pkg/protocol/internal/errgen"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "errgen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("errgen", flag.ContinueOnError)
	in := fs.String("in", "", "the catalogue (schemas/errors.json)")
	out := fs.String("out", "", "the Go file to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *out == "" {
		return fmt.Errorf("-in and -out are required")
	}
	b, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	c, err := errgen.Parse(b)
	if err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	src, err := errgen.Generate(c)
	if err != nil {
		return err
	}
	return os.WriteFile(*out, src, 0o644)
}
