// Package tools pins the developer tools the project runs with `go tool`
// (the nats CLI: `go tool nats stream ls`). It holds no code.
package tools
