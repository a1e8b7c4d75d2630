// Package e2e holds jetserve's end-to-end tests and benchmarks. They build
// every binary once (nats-server, the five services and the CLI), run each
// as its own OS process against a standalone JetStream server, and drive
// the fleet only through its public interfaces: the HTTP ingress, the admin
// API and the CLI.
//
//	go test ./...                         # the suite (a few minutes)
//	go test -short ./...                  # skips it
//	go test -run '^$' -bench . -benchtime 2000x ./   # fleet vs raw HTTP/NATS
//
// JETSERVE_E2E_RACE=1 builds the services with -race. E2E_KEEP_LOGS=DIR
// keeps every process's log after its test, as DIR/<test>/<process>-<pid>.log
// (the test's own temporary directories are removed). The harness itself
// is in internal/fleet.
package e2e
