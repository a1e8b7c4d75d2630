package backoff

import (
	"context"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	tests := []struct {
		name        string
		first, max  time.Duration
		want        []time.Duration
		resetBefore int // Reset before this call (-1: never)
	}{
		{"doubles up to the cap", 100 * time.Millisecond, time.Second, []time.Duration{100, 200, 400, 800, 1000, 1000}, -1},
		{"reset starts over", 100 * time.Millisecond, time.Second, []time.Duration{100, 200, 100, 200}, 2},
		{"cap below first: first", 500 * time.Millisecond, 0, []time.Duration{500, 500, 500}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.first, tc.max)
			for i, w := range tc.want {
				if i == tc.resetBefore {
					b.Reset()
				}
				if got := b.Next(); got != w*time.Millisecond {
					t.Fatalf("Next() #%d = %v, want %v", i+1, got, w*time.Millisecond)
				}
			}
		})
	}
}

func TestNth(t *testing.T) {
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		if got := Nth(100*time.Millisecond, time.Second, n); got != want*time.Millisecond {
			t.Errorf("Nth(100ms, 1s, %d) = %v, want %v", n, got, want*time.Millisecond)
		}
	}
	if got := Nth(time.Millisecond, time.Hour, 1000); got != time.Hour {
		t.Errorf("Nth(1ms, 1h, 1000) = %v, want 1h (no overflow)", got)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if New(time.Hour, time.Hour).Wait(ctx) {
		t.Fatal("Wait on a cancelled context = true, want false at once")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep(1ms) = false, want true")
	}
}

func TestNthDoesNotOverflow(t *testing.T) {
	if got := Nth(time.Hour, 1<<62, 200); got != 1<<62 {
		t.Errorf("Nth(1h, 2⁶², 200) = %v, want the cap", got)
	}
}
