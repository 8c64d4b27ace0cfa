package admission

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// matching is the budget of expect matching: each caller's bucket of
// steps (instructions a matcher visits, 10 to 30 ns of CPU each), and one
// bucket for all callers together.
//
// The caller's bucket holds one caller, however many probes it runs at
// once, to its share of the CPU. The bucket of all callers is there
// because callers are cheap to come by: an anonymous caller is an IPv4
// address or an IPv6 /64, and a handful of them, each within its own
// budget, would otherwise take every CPU. It gets allTimesCPUs caller
// budgets for each CPU (GOMAXPROCS): with a caller's budget at a quarter of
// a CPU, half the CPUs, so that a crowd of matching callers leaves the
// other half to serving calls. Past it, every caller's costly expects wait
// their turn; the cheap ones never reach a charge (see service's budget).
type matching struct {
	callers *rateLimiter
	all     *rate.Limiter
	refused func(limit string)
}

// allTimesCPUs is how many callers' budgets of matching all callers
// together get, for each CPU.
const allTimesCPUs = 2

func newMatching(perCaller, cpus int, refused func(string)) *matching {
	all := perCaller * allTimesCPUs * cpus
	return &matching{
		// A second's worth at once: more than an ordinary expect ever
		// spends, in a burst or all its life.
		callers: newRateLimiter("match_steps_per_caller", float64(perCaller), perCaller, refused),
		all:     rate.NewLimiter(rate.Limit(all), all),
		refused: refused,
	}
}

// spend takes steps from the caller's bucket and from all callers', waiting
// for them while ctx lasts. When they cannot come before ctx's deadline,
// it gives them back, counts the refusal, and waits for the deadline: the
// expect could not finish in its time at the budget, and ends as a probe
// whose time ran out. It fails once ctx ends.
func (m *matching) spend(ctx context.Context, steps int) error {
	now := time.Now()
	mine := m.callers.bucket(CallerOf(ctx)).ReserveN(now, steps)
	all := m.all.ReserveN(now, steps)
	// A reservation that is not OK (more steps than a bucket holds)
	// never comes: its delay is rate.InfDuration.
	mineWait, allWait := mine.DelayFrom(now), all.DelayFrom(now)
	wait := max(mineWait, allWait)
	if wait == 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); wait == rate.InfDuration || ok && now.Add(wait).After(deadline) {
		mine.CancelAt(now)
		all.CancelAt(now)
		if mineWait == wait {
			m.refused(m.callers.label)
		} else {
			m.refused("match_steps")
		}
		<-ctx.Done()
		return ctx.Err()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		mine.Cancel()
		all.Cancel()
		return ctx.Err()
	}
}
