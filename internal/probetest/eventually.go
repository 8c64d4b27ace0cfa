package probetest

import (
	"testing"
	"time"
)

// Eventually waits until cond holds, looking every 10 ms, and fails the
// test if it does not within Timeout: the one way the tests wait for
// something they cannot be told of, such as a metric or a count of
// answers reaching a value. On failure, describe says what was waited for
// and what was seen instead. A wait that must return what it saw captures
// it in cond.
func Eventually(t testing.TB, cond func() bool, describe func() string) {
	t.Helper()
	EventuallyWithin(t, Timeout, cond, describe)
}

// EventuallyWithin is Eventually with a deadline of d instead of Timeout,
// for a program slower than ours to start and answer (Prometheus's first
// scrapes).
func EventuallyWithin(t testing.TB, d time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v: %s", d, describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
