// Package tools pins the developer tools the project runs with `go tool`
// (the nats CLI: `go tool nats stream ls`) and holds the project's own
// (tracestat: where requests wait, from an execution trace).
package tools
