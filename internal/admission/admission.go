// Package admission decides who is calling and whether the call may run.
// One function names the caller from whatever it presents (a bearer token,
// a verified client certificate, a basic auth user, or else its address:
// Identify), and one path charges the limits (Admit, WaitProbe, Spend):
// the caller's rate, the probes in flight, the Sweeps, the streams that
// stay open, the requests being read, the CPU its expects spend matching.
// gRPC, /probe, the status page and whatever comes next all go through
// them, so that they agree on who is calling and on what it may do.
package admission

import (
	"context"
	"fmt"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits are what a caller may do at once; see server.Config, which
// declares them.
type Limits struct {
	MaxInFlight, MaxInFlightPerCaller int
	Rate                              float64
	Burst                             int
	ScrapeRate                        float64
	ScrapeBurst                       int
	MaxSweeps, MaxSweepsPerCaller     int
	MaxWatches, MaxWatchesPerCaller   int
	MaxReadsPerCaller                 int
	// ExpectRate is the steps of expect matching a caller may spend a
	// second (Spend), at least MinExpectRate.
	ExpectRate int
}

// MinExpectRate is the least ExpectRate: a second's worth of steps is what
// a caller may spend at once, and a charge is of some thousands.
const MinExpectRate = 1 << 16

// Metrics are where admission counts what it refuses.
type Metrics struct {
	// Refusals counts refused calls by limit
	// (netprobe_limit_refusals_total).
	Refusals *prometheus.CounterVec
	// Unauthenticated counts calls without the token they needed.
	Unauthenticated prometheus.Counter
	// InFlight is the probes running now.
	InFlight prometheus.Gauge
}

// Admission is the one way in: it names callers and charges their limits.
type Admission struct {
	tokens   *tokens
	metrics  Metrics
	inflight *inFlight
	rates    *rateLimiter
	scrapes  *rateLimiter
	guesses  *rateLimiter
	// allGuesses is every source's guesses together: a source's budget
	// alone lets many sources (an IPv6 /48 holds 65,536 /64s) hash as
	// much as they like.
	allGuesses *rate.Limiter
	reads      *gate
	watches    *gate
	sweeps     *gate
	matching   *matching
}

// New returns the admission of callers named by the tokens of tokensFile
// (none when empty: then no call needs a token), held to l, counted in m.
func New(tokensFile string, l Limits, m Metrics) (*Admission, error) {
	if l.ExpectRate < MinExpectRate {
		return nil, fmt.Errorf("expect rate %d: want at least %d steps a second", l.ExpectRate, MinExpectRate)
	}
	a := &Admission{metrics: m}
	if tokensFile != "" {
		var err error
		if a.tokens, err = loadTokens(tokensFile); err != nil {
			return nil, err
		}
	}
	a.inflight = newInFlight(l.MaxInFlight, l.MaxInFlightPerCaller, a.refused, m.InFlight)
	a.rates = newRateLimiter("rate", l.Rate, l.Burst, a.refused)
	a.scrapes = newRateLimiter("scrape_rate", l.ScrapeRate, l.ScrapeBurst, a.refused)
	a.guesses = newRateLimiter("basic_auth", BasicAuthRate, basicAuthBurst, a.refused)
	a.allGuesses = rate.NewLimiter(allGuessesRate, allGuessesBurst)
	a.reads = newGate("requests being read", "reads_per_caller", l.MaxReadsPerCaller, "", 0, a.refused)
	a.watches = newGate("streams open (health Watch, reflection)", "watches_per_caller", l.MaxWatchesPerCaller, "watches", l.MaxWatches, a.refused)
	a.sweeps = newGate("Sweeps running", "sweeps_per_caller", l.MaxSweepsPerCaller, "sweeps", l.MaxSweeps, a.refused)
	a.matching = newMatching(l.ExpectRate, runtime.GOMAXPROCS(0), a.refused)
	return a, nil
}

// Labels are every limit admission refuses by, for Refusals to start at
// zero.
var Labels = []string{"in_flight", "in_flight_per_caller", "rate", "scrape_rate", "reads_per_caller",
	"watches_per_caller", "watches", "sweeps_per_caller", "sweeps", "basic_auth", "match_steps_per_caller", "match_steps"}

// The budget of basic auth attempts each source has (an IPv4 address or
// IPv6 /64), and all sources together: exporter-toolkit checks a password
// it has not seen with bcrypt, 50 to 100 ms of CPU each, and a flood of
// wrong ones would otherwise cost a core. basicAuthBurst attempts at
// once, then one every 1/BasicAuthRate seconds, for each source; at most
// allGuessesRate a second for all of them, a tenth of a CPU.
const (
	basicAuthBurst  = 5
	BasicAuthRate   = 0.2
	allGuessesRate  = 1
	allGuessesBurst = 10
)

func (a *Admission) refused(limit string) { a.metrics.Refusals.WithLabelValues(limit).Inc() }

func (a *Admission) unauthenticated() {
	if a.metrics.Unauthenticated != nil {
		a.metrics.Unauthenticated.Inc()
	}
}

// Kind is what a call is, for the limits it is held to.
type Kind int

const (
	// Probe is a Connect, Fetch or ResolveService: it takes a token of
	// its caller's rate, and a place among the probes in flight for as
	// long as it runs.
	Probe Kind = iota
	// Sweep takes a place among the Sweeps running, for as long as it
	// runs; its probes are admitted one by one (WaitProbe).
	Sweep
	// Watch is a stream that stays open without being a probe (health
	// Watch, reflection): it takes a place among its caller's open
	// streams for as long as it runs.
	Watch
	// Read is a call that is not a probe and ends at once (a health
	// check): it takes a place among the requests being read while its
	// request is read.
	Read
	// Scrape is a scrape of /probe: it takes a token of the scraper's
	// own rate, and a place among the probes in flight.
	Scrape
	// Guess is an HTTP request with basic auth credentials that have not
	// passed before: it takes a token of its source's budget of guesses,
	// before any password is hashed.
	Guess
)

// Admit takes a place for a call of kind k by the caller of ctx (named by
// Identify, or else by its peer), before its request is read; it fails at
// once with RESOURCE_EXHAUSTED over a limit, UNAVAILABLE once draining.
// release gives the place back.
func (a *Admission) Admit(ctx context.Context, k Kind) (release func(), err error) {
	switch k {
	case Probe:
		if err := a.rates.Limit(ctx); err != nil {
			return nil, err
		}
		return a.inflight.acquire(ctx)
	case Scrape:
		if err := a.scrapes.Limit(ctx); err != nil {
			return nil, err
		}
		return a.inflight.acquire(ctx)
	case Sweep:
		if a.inflight.isDraining() {
			return nil, errDraining
		}
		return a.sweeps.acquire(ctx)
	case Watch:
		return a.watches.acquire(ctx)
	case Guess:
		if err := a.guesses.Limit(ctx); err != nil {
			return nil, err
		}
		if !a.allGuesses.Allow() {
			a.refused("basic_auth")
			return nil, status.Error(codes.ResourceExhausted, "too many basic auth attempts from everywhere; try again later")
		}
		return func() {}, nil
	default:
		return a.reads.acquire(ctx)
	}
}

// WaitProbe holds a Sweep's probe to its caller's rate and the in-flight
// limits, waiting for its turn while ctx lasts: service.Limiter.
func (a *Admission) WaitProbe(ctx context.Context) (release func(), err error) {
	if err := a.rates.wait(ctx); err != nil {
		return nil, err
	}
	return a.inflight.wait(ctx)
}

// Spend charges steps of an expect's matching to the caller of ctx, a
// probe's context, waiting while the caller, or all callers together, are
// over their budget: service.Limiter. When the steps cannot come before
// ctx's deadline it waits for the deadline instead, and counts the
// refusal (match_steps_per_caller, or match_steps when all callers are
// over theirs). It fails once ctx ends.
func (a *Admission) Spend(ctx context.Context, steps int) error { return a.matching.spend(ctx, steps) }

// Drain refuses every call Admit and WaitProbe are asked for from now on,
// and wakes the probes waiting.
func (a *Admission) Drain() { a.inflight.drain() }

// Draining reports whether Drain was called.
func (a *Admission) Draining() bool { return a.inflight.isDraining() }
