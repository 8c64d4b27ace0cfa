package admission

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// within returns ctx with a deadline d from now: a Spend that has to wait
// longer than d for its steps fails.
func within(t *testing.T, ctx context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(ctx, d)
	t.Cleanup(cancel)
	return ctx
}

// TestMatchingPerCaller plays a caller whose expects match costly
// expressions: it spends its second's worth at once, then waits for more;
// steps that cannot come in its probe's time end the probe at its
// deadline, counted, and are given back; another caller is not held by
// it.
func TestMatchingPerCaller(t *testing.T) {
	const perCaller = 1 << 20
	var refused []string
	m := newMatching(perCaller, 64, func(l string) { refused = append(refused, l) })
	attacker, victim := from("192.0.2.1"), from("192.0.2.2")
	// A second's worth at once, with no time to wait.
	if err := m.spend(within(t, attacker, time.Millisecond), perCaller); err != nil {
		t.Fatalf("the first second's worth: %v", err)
	}
	// A quarter of a second's worth more needs about 250 ms, which a probe
	// with 20 ms left does not have: it fails as its context ends.
	short := within(t, attacker, 20*time.Millisecond)
	if err := m.spend(short, perCaller/4); !errors.Is(err, context.DeadlineExceeded) || short.Err() == nil {
		t.Fatalf("over its budget with 20 ms left: %v (context %v), want the deadline, reached", err, short.Err())
	}
	if !slices.Equal(refused, []string{"match_steps_per_caller"}) {
		t.Errorf("refusals counted %v, want one of match_steps_per_caller", refused)
	}
	// Another caller's expects are not held by the attacker's.
	if err := m.spend(within(t, victim, time.Millisecond), perCaller); err != nil {
		t.Errorf("another caller, with its own budget: %v", err)
	}
	// The steps refused were given back: an eighth of a second's worth
	// comes some 125 ms after the bucket emptied, not 375 ms (after the
	// quarter the failed probe reserved too), within 230 ms.
	if err := m.spend(within(t, attacker, 230*time.Millisecond), perCaller/8); err != nil {
		t.Errorf("over its budget with 230 ms left: %v, want to wait and go on", err)
	}
	// More steps than a second's worth never come.
	if err := m.spend(within(t, victim, 20*time.Millisecond), 2*perCaller); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("more than a second's worth: %v, want the deadline", err)
	}
	// A probe whose caller leaves stops waiting.
	ctx, cancel := context.WithCancel(attacker)
	time.AfterFunc(10*time.Millisecond, cancel)
	if err := m.spend(ctx, perCaller); !errors.Is(err, context.Canceled) {
		t.Errorf("the caller left: %v, want canceled", err)
	}
}

// TestMatchingCeiling plays many callers, each within its own budget, as
// one attacker with many addresses would be: together they get
// allTimesCPUs callers' worth a CPU, and past that every caller waits.
func TestMatchingCeiling(t *testing.T) {
	const perCaller = 1 << 20
	var refused []string
	m := newMatching(perCaller, 1, func(l string) { refused = append(refused, l) })
	for i := range allTimesCPUs {
		caller := from(fmt.Sprintf("198.18.0.%d", i+1))
		if err := m.spend(within(t, caller, time.Millisecond), perCaller); err != nil {
			t.Fatalf("caller %d of %d, within the ceiling: %v", i+1, allTimesCPUs, err)
		}
	}
	if err := m.spend(within(t, from("198.18.1.1"), 20*time.Millisecond), perCaller/4); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a caller past the ceiling, with 20 ms left: %v, want the deadline", err)
	}
	if !slices.Equal(refused, []string{"match_steps"}) {
		t.Errorf("refusals counted %v, want one of match_steps", refused)
	}
}

// TestExpectRateMinimum refuses a budget smaller than one charge.
func TestExpectRateMinimum(t *testing.T) {
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"limit"})
	for _, rate := range []int{0, MinExpectRate - 1} {
		if _, err := New(Config{ExpectRate: rate}, Metrics{Refusals: refusals}); err == nil {
			t.Errorf("expect rate %d: accepted, want refused", rate)
		}
	}
}
