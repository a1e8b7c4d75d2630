// Package test checks what ships in deploy/ against the code, offline:
// the Grafana dashboard's queries name metrics the services really export
// (the whole fleet runs in-process and its /metrics are scraped), and the
// Kubernetes manifests decode strictly into the Kubernetes and KEDA API
// types and agree with the services' options (ports, probes, names).
//
// It is its own module so that no service inherits k8s.io/api.
package test
