package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	lo, hi := 100*time.Millisecond, time.Second
	for a := 0; a < 10; a++ {
		for _, r := range []float64{0, 0.5, 0.999} {
			d := Delay(lo, hi, a, r)
			capD := min(lo<<a, hi)
			if d < capD/2 || d > capD {
				t.Fatalf("attempt %d r %v: %v outside [%v,%v]", a, r, d, capD/2, capD)
			}
		}
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep with a live context reported false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with an ended context reported true")
	}
}
