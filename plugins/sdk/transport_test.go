package sdk

import (
	"context"
	"testing"
	"time"
)

func TestForward(t *testing.T) {
	in, out, done := make(chan Event, 2), make(chan Event), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ret := make(chan error, 1)
	go func() { ret <- Forward(ctx, in, out, done) }()
	in <- Event{Incoming: &Incoming{From: "+447400123456", Text: "one"}}
	if ev := <-out; ev.Incoming == nil || ev.Incoming.Text != "one" {
		t.Fatalf("forwarded %+v", ev)
	}
	close(done)
	select {
	case err := <-ret:
		if err != nil {
			t.Errorf("Forward returned %v after done", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Forward did not return once done was closed")
	}

	// With a nil done, ctx alone ends it, also while an event waits for out.
	go func() { ret <- Forward(ctx, in, out, nil) }()
	in <- Event{Report: &Report{Ref: "r1", State: "delivered"}}
	time.Sleep(10 * time.Millisecond)
	cancel()
	select {
	case err := <-ret:
		if err != nil {
			t.Errorf("Forward returned %v after ctx ended", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Forward did not return once ctx ended")
	}
}
