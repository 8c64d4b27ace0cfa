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
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config is who may call and what a caller may do at once. Each setting
// is declared once, by its field's tags (see internal/settings).
type Config struct {
	// TokensFile, when set, requires a bearer token from it ("NAME TOKEN"
	// lines) on every call but health checks; NAME names the caller.
	TokensFile string `flag:"tokens-file" env:"NETPROBE_TOKENS_FILE" group:"Serving" help:"Require a bearer token from this file (one \"NAME TOKEN\" a line) on every call but health checks. NAME is the caller's identity."`
	// MaxInFlight caps the probes running at once, server-wide, and
	// MaxInFlightPerCaller those of one caller.
	MaxInFlight          int `flag:"max-in-flight" env:"NETPROBE_MAX_IN_FLIGHT" default:"512" group:"Limits" help:"Most probes running at once, server-wide (each probe of a Sweep counts); more are RESOURCE_EXHAUSTED at once, never queued, and a Sweep's probes wait for a place within its time."`
	MaxInFlightPerCaller int `flag:"max-in-flight-per-caller" env:"NETPROBE_MAX_IN_FLIGHT_PER_CALLER" default:"64" group:"Limits" help:"Most probes one caller may run at once (a caller is a token or certificate name, or else a peer's IPv4 address or IPv6 /64); more as --max-in-flight."`
	// Rate is how many probes a second a caller may start on average, and
	// Burst how many at once.
	Rate  float64 `flag:"rate" env:"NETPROBE_RATE" default:"50" group:"Limits" help:"Probes a second each caller may start, on average (each probe of a Sweep is charged); more are RESOURCE_EXHAUSTED, and a Sweep's probes wait, those whose turn comes too late coming back abandoned."`
	Burst int     `flag:"burst" env:"NETPROBE_BURST" default:"100" group:"Limits" help:"Probes a caller may start at once, above --rate."`
	// MaxSweepsPerCaller caps the Sweeps one caller runs at once, and
	// MaxSweeps those of all callers.
	MaxSweepsPerCaller int `flag:"max-sweeps-per-caller" env:"NETPROBE_MAX_SWEEPS_PER_CALLER" default:"4" group:"Limits" help:"Most Sweeps one caller may run at once, admitted before their request is read (each holds its request while it runs: up to --max-payload-bytes plus 64 KiB on the wire, and 65,536 elements, messages and entries of repeated fields, at most 10 MB, decoded); more are RESOURCE_EXHAUSTED."`
	MaxSweeps          int `flag:"max-sweeps" env:"NETPROBE_MAX_SWEEPS" default:"32" group:"Limits" help:"Most Sweeps all callers together may run at once; more are RESOURCE_EXHAUSTED."`
	// ExpectRate is the work each caller's expects may do a second, in
	// matcher steps (an instruction visited for a byte received: 10 to 30
	// ns of CPU each, measured). The default, 8 million, is a quarter of a
	// CPU at the most, and over 100 times what a Fetch reading 64 KiB of
	// SMTP replies through `^250 ` spends; an ordinary expect on a banner
	// spends less than the 4,096 steps a charge is made of, and is never
	// slowed.
	ExpectRate int `flag:"expect-rate" env:"NETPROBE_EXPECT_RATE" default:"8000000" group:"Limits" help:"Work a second each caller's expects may do matching, in steps (an instruction of the expression visited for a byte received, 10 to 30 ns of CPU each: 8000000 is a quarter of a CPU at the most), with a second's worth at once; all callers together get 2 x GOMAXPROCS times this (half the CPUs). An expect over it waits, and one whose budget cannot come within its probe's time ends REASON_TIMEOUT. An expect on a banner spends under 4,096 steps and is never held. At least 65536."`
	// MaxReadsPerCaller caps the requests of one caller that are read at
	// once, for health checks.
	MaxReadsPerCaller int `flag:"max-reads-per-caller" env:"NETPROBE_MAX_READS_PER_CALLER" default:"8" group:"Limits" help:"Most health check requests of one caller read at once; more are RESOURCE_EXHAUSTED. Before their request is read, probes are held to --max-in-flight-per-caller, Sweeps to --max-sweeps-per-caller, streams that stay open to --max-watches-per-caller."`
	// MaxWatchesPerCaller caps the streams one caller holds open that are
	// not probes (health Watch, reflection), and MaxWatches those of all
	// callers.
	MaxWatchesPerCaller int `flag:"max-watches-per-caller" env:"NETPROBE_MAX_WATCHES_PER_CALLER" default:"16" group:"Limits" help:"Most streams one caller may hold open that are not probes: health Watch, reflection (a grpcurl holds a reflection stream for as long as it runs, and a grpcurl watching health two); more are RESOURCE_EXHAUSTED."`
	MaxWatches          int `flag:"max-watches" env:"NETPROBE_MAX_WATCHES" default:"1024" group:"Limits" help:"Most streams all callers together may hold open that are not probes; more are RESOURCE_EXHAUSTED."`
	// ScrapeRate and ScrapeBurst are each scraper's bucket of /probe
	// probes, apart from its gRPC one.
	ScrapeRate  float64 `flag:"scrape-rate" env:"NETPROBE_SCRAPE_RATE" default:"100" group:"Prometheus" help:"Probes a second each scraper may start through /probe, on average: its targets divided by its scrape interval (1,500 targets every 15s is 100); more are 429."`
	ScrapeBurst int     `flag:"scrape-burst" env:"NETPROBE_SCRAPE_BURST" default:"1000" group:"Prometheus" help:"Probes a scraper may start at once through /probe, above --scrape-rate: Prometheus may scrape all its targets together."`
	// Peers are the callers that are this node's peers in a fleet: the
	// caller one names when it forwards a call is the call's caller.
	Peers []string `flag:"peer" env:"NETPROBE_PEER" sep:";" group:"Fleet" help:"A caller (a token's name, a certificate's identity) that is a peer of this node, repeatable: the caller its forwarded Sweep names is the call's caller here, held to that caller's policy and limits. A name forwarded by anyone else is PERMISSION_DENIED."`
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
	// tokensFile's tokens are in use; they are swapped whole as it is
	// reloaded (ReloadTokens).
	tokensFile string
	// peers are the callers whose forwarded caller names are honoured.
	peers    []string
	tokens   atomic.Pointer[tokens]
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

// New returns the admission of callers named by the tokens of
// cfg.TokensFile (none when empty: then no call needs a token), held to
// cfg's limits, counted in m.
func New(cfg Config, m Metrics) (*Admission, error) {
	if cfg.ExpectRate < MinExpectRate {
		return nil, fmt.Errorf("expect rate %d: want at least %d steps a second", cfg.ExpectRate, MinExpectRate)
	}
	a := &Admission{metrics: m, tokensFile: cfg.TokensFile, peers: cfg.Peers}
	if err := a.ReloadTokens(); err != nil {
		// Named as probed's files name their errors (internal/reload).
		return nil, fmt.Errorf("tokens-file: %w", err)
	}
	a.inflight = newInFlight(cfg.MaxInFlight, cfg.MaxInFlightPerCaller, a.refused, m.InFlight)
	a.rates = newRateLimiter("rate", cfg.Rate, cfg.Burst, a.refused)
	a.scrapes = newRateLimiter("scrape_rate", cfg.ScrapeRate, cfg.ScrapeBurst, a.refused)
	a.guesses = newRateLimiter("basic_auth", BasicAuthRate, basicAuthBurst, a.refused)
	a.allGuesses = rate.NewLimiter(allGuessesRate, allGuessesBurst)
	a.reads = newGate("requests being read", "reads_per_caller", cfg.MaxReadsPerCaller, "", 0, a.refused)
	a.watches = newGate("streams open (health Watch, reflection)", "watches_per_caller", cfg.MaxWatchesPerCaller, "watches", cfg.MaxWatches, a.refused)
	a.sweeps = newGate("Sweeps running", "sweeps_per_caller", cfg.MaxSweepsPerCaller, "sweeps", cfg.MaxSweeps, a.refused)
	a.matching = newMatching(cfg.ExpectRate, runtime.GOMAXPROCS(0), a.refused)
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
