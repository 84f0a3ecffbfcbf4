package smpp

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// window bounds the submit_sm in flight (awaiting submit_sm_resp) and
// slows down when the SMSC throttles: each throttle episode halves the
// limit and pauses all submits; every `limit` accepted submits grow it by
// one again, up to the configured window (AIMD, as TCP does). Waiters are
// served first come, first served, so a burst of Sends cannot starve one.
type window struct {
	mu       sync.Mutex
	max      int
	limit    int
	inflight int
	waiters  list.List // of chan struct{}, closed when granted a slot
	paused   time.Time // no grants before this
	backoff  time.Duration
	okRun    int
	episodes int // throttle episodes so far (for logs and tests)
	timer    *time.Timer
	now      func() time.Time
}

const maxThrottlePause = 5 * time.Second

func newWindow(size int) *window {
	return &window{max: size, limit: size, now: time.Now}
}

// acquire waits for a slot. On success the caller must call release.
func (w *window) acquire(ctx context.Context) error {
	w.mu.Lock()
	if w.waiters.Len() == 0 && w.canTakeLocked() {
		w.inflight++
		w.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	e := w.waiters.PushBack(ch)
	w.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		w.mu.Lock()
		select {
		case <-ch: // granted while we gave up: pass it on
			w.inflight--
			w.grantLocked()
		default:
			w.waiters.Remove(e)
		}
		w.mu.Unlock()
		return ctx.Err()
	}
}

func (w *window) canTakeLocked() bool {
	return w.inflight < w.limit && !w.now().Before(w.paused)
}

func (w *window) grantLocked() {
	for w.waiters.Len() > 0 && w.canTakeLocked() {
		e := w.waiters.Front()
		w.waiters.Remove(e)
		w.inflight++
		close(e.Value.(chan struct{}))
	}
}

// release returns a slot.
func (w *window) release() {
	w.mu.Lock()
	w.inflight--
	w.grantLocked()
	w.mu.Unlock()
}

// succeeded records an accepted submit: it ends a throttle episode and
// grows the limit additively.
func (w *window) succeeded() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.backoff = 0
	if w.limit >= w.max {
		return
	}
	w.okRun++
	if w.okRun >= w.limit {
		w.okRun = 0
		w.limit++
		w.grantLocked()
	}
}

// throttled records a throttle answer. Answers arriving while a pause is
// on belong to the same episode (they were in flight together) and change
// nothing; the first one after a pause doubles the pause, from base up to
// maxThrottlePause.
func (w *window) throttled(base time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if now.Before(w.paused) {
		return
	}
	w.limit = max(1, w.limit/2)
	w.okRun = 0
	w.episodes++
	if w.backoff == 0 {
		w.backoff = base
	} else {
		w.backoff = min(2*w.backoff, maxThrottlePause)
	}
	w.paused = now.Add(w.backoff)
	w.armLocked(w.backoff)
}

// armLocked wakes the waiters when the pause ends.
func (w *window) armLocked(d time.Duration) {
	if w.timer != nil {
		w.timer.Stop()
	}
	w.timer = time.AfterFunc(d, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if left := w.paused.Sub(w.now()); left > 0 {
			w.armLocked(left) // woke a little early
			return
		}
		w.grantLocked()
	})
}

// state reports the current limit and in-flight count (for logs and tests).
func (w *window) state() (limit, inflight int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.limit, w.inflight
}
