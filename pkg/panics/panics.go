// Package panics turns a panic in code jetserve calls on a user's behalf
// (a handler, a constructor, a batch function, a model loader) into an
// error, so that one bad request or job fails and the process goes on.
package panics

import "fmt"

// Error is a recovered panic.
type Error struct {
	// What panicked ("handler", "constructor", …).
	What string
	// Value is what it panicked with.
	Value any
}

func (e *Error) Error() string { return fmt.Sprintf("%s panicked: %v", e.What, e.Value) }

// Recover, deferred by a function with a named error result, turns a
// panic of that function into an *Error in *err:
//
//	func call(f func() error) (err error) {
//		defer panics.Recover("handler", &err)
//		return f()
//	}
func Recover(what string, err *error) {
	if v := recover(); v != nil {
		*err = &Error{What: what, Value: v}
	}
}
