package probetest

import (
	"testing"
	"time"
)

// Eventually waits until cond holds, looking every 10 ms, and fails the
// test if it does not within Timeout: the one way the tests wait for
// something they cannot be told of, such as a metric or a count of
// answers reaching a value. On failure, describe says what was waited for
// and what was seen instead.
func Eventually(t testing.TB, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v: %s", Timeout, describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
