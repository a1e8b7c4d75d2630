package panics

import (
	"errors"
	"testing"
)

func call(f func() error) (err error) {
	defer Recover("handler", &err)
	return f()
}

func TestRecover(t *testing.T) {
	err := call(func() error { panic("boom") })
	var pe *Error
	if !errors.As(err, &pe) || pe.What != "handler" || pe.Value != "boom" || err.Error() != "handler panicked: boom" {
		t.Fatalf("call(panic) = %v, want a recovered *Error", err)
	}
	want := errors.New("plain")
	if err := call(func() error { return want }); err != want {
		t.Fatalf("call(error) = %v, want it unchanged", err)
	}
	if err := call(func() error { return nil }); err != nil {
		t.Fatalf("call(nil) = %v", err)
	}
}
