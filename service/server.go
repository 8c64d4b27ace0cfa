package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/services"
	"github.com/netprobe/netprobe/internal/settings"
	"github.com/netprobe/netprobe/policy"
)

// Limits are the service's limits. Each field's tags declare it once: its
// default, which New gives a field left zero, and its flag in probed
// (see internal/settings).
type Limits struct {
	// DefaultTimeout bounds a probe whose request sets no timeout.
	DefaultTimeout time.Duration `flag:"default-timeout" env:"NETPROBE_DEFAULT_TIMEOUT" default:"5s" group:"Limits" help:"Probe timeout when a request sets none."`
	// MaxTimeout is the largest timeout a request may ask for.
	MaxTimeout time.Duration `flag:"max-timeout" env:"NETPROBE_MAX_TIMEOUT" default:"1m0s" group:"Limits" help:"Largest probe timeout a request may ask for, which bounds a Fetch too; more is INVALID_ARGUMENT."`
	// MaxPayloadBytes caps a Fetch request's payload.
	MaxPayloadBytes int `flag:"max-payload-bytes" env:"NETPROBE_MAX_PAYLOAD_BYTES" default:"1048576" group:"Limits" help:"Largest Fetch payload a request may carry, in bytes (1 MiB), its sends and send_templates together: more is INVALID_ARGUMENT. A request message is at most this plus 64 KiB (RESOURCE_EXHAUSTED past it), and every method but Fetch and Sweep takes 64 KiB at most."`
	// MaxFetchBytes caps how much one Fetch receives.
	MaxFetchBytes uint64 `flag:"max-fetch-bytes" env:"NETPROBE_MAX_FETCH_BYTES" default:"67108864" group:"Limits" help:"Most bytes one Fetch may receive (64 MiB), and the default for requests that set no max_bytes; a larger max_bytes is INVALID_ARGUMENT."`
	// MaxSweepConcurrency caps the probes one Sweep runs at once; a sweep
	// asking for more gets this many.
	MaxSweepConcurrency int `flag:"max-sweep-concurrency" env:"NETPROBE_MAX_SWEEP_CONCURRENCY" default:"64" group:"Limits" help:"Most probes one Sweep runs at once; a Sweep asking for more gets this many (bounded, not refused)."`
	// MaxSweepTargets caps the targets of one Sweep: more entries are
	// INVALID_ARGUMENT, and the targets expanded past it are not probed
	// (REASON_LIMIT).
	MaxSweepTargets int `flag:"max-sweep-targets" env:"NETPROBE_MAX_SWEEP_TARGETS" default:"10000" group:"Limits" help:"Most targets one Sweep may probe: more entries are INVALID_ARGUMENT, and the addresses and SRV entries they expand to past it come back STAGE_POLICY / REASON_LIMIT, not probed."`
}

// Limits are the server's limits, its Config's with their defaults.
func (s *Server) Limits() Limits { return s.cfg.Limits }

// DefaultLimits are the limits of a Config that sets none.
func DefaultLimits() Limits {
	var l Limits
	if err := settings.Defaults(&l); err != nil {
		panic(err) // the tags above are wrong: TestDefaultLimits fails
	}
	return l
}

// Config holds the server's limits, policy and resolvers. Zero limits take
// their defaults (DefaultLimits); a nil Resolver is ResolverFor("").
type Config struct {
	Limits
	// Resolver resolves host names and reverse-looks-up addresses; nil is
	// ResolverFor(DNSServer).
	Resolver *net.Resolver
	// DNSServer, "host:port", is the server every DNS query goes to, when
	// it is not the system's: ResolverFor(DNSServer) when Resolver is nil,
	// and the server DNS errors name.
	DNSServer string
	// Services maps service names to ports; nil is the built-in table
	// alone (probed reads /etc/services too).
	Services *services.Table
	// Policy decides which addresses probes may reach; nil is
	// policy.New(), the built-in denials only.
	Policy Policy
	// ClientIdentities are the client certificates probes may present,
	// as the Policy grants them; nil is none.
	ClientIdentities ClientIdentities
	// AllowedSources are the addresses a probe may bind as its source
	// (Target.source_address); none by default.
	AllowedSources []netip.Prefix
	// Limiter, when set, holds each probe of a Sweep to the server's
	// limits (Connect and Fetch are one probe a call, which the server
	// admits before the handler runs), and the expects of every Fetch and
	// Sweep to their caller's budget of matching.
	Limiter Limiter
	// Observe, when set, is told of every probe (a Connect, a Fetch, each
	// probe of a Sweep) once it ends, for audit logs and metrics. It may be
	// called from several goroutines at once.
	Observe func(context.Context, Report)
}

// Policy decides which addresses probes may reach, and which client
// identities callers may present: a *policy.Policy, or one that is swapped
// for another as its file changes.
type Policy interface {
	// Check refuses caller's probe of ap with a *policy.Refusal, or lets
	// it through (nil).
	Check(caller string, ap netip.AddrPort) error
	// MayUse reports whether caller may present the client identity id.
	MayUse(caller, id string) bool
}

// Report is what one Connect or Fetch did.
type Report struct {
	// Method is "Connect", "Fetch" or "Sweep" (one report a probe).
	Method string
	// Target is the target as the request gave it.
	Target *netprobev1.Target
	// Given, when set, is the target as its caller wrote it, which could
	// not be made a Target (a /probe target that is not HOST:PORT).
	Given string
	// Connect is the report of the connect phase.
	Connect *netprobev1.ConnectResponse
	// Summary is a Fetch's summary, once it got as far as the exchange.
	Summary *netprobev1.FetchSummary
	// Error is the probe's failure, a policy refusal included.
	Error *netprobev1.ProbeError
	// Path is the trace of the path to the target, when one was made: a
	// Connect's or Sweep entry's (Connect.Path) or a Fetch's
	// (Summary.Path).
	Path *netprobev1.Path
	// Abandoned is true when the caller left (cancelled, or its deadline
	// passed) before the probe ended.
	Abandoned bool
	// Duration is how long the probe ran.
	Duration time.Duration
}

// Limiter holds probes to the server's limits.
type Limiter interface {
	// WaitProbe waits until the caller of ctx may start one more probe, no
	// longer than ctx lasts, and returns the function that gives its place
	// back. It fails when ctx ends first or the server is draining.
	WaitProbe(ctx context.Context) (release func(), err error)
	// Spend charges steps of an expect's matching (instructions its
	// matcher visited) to the caller of ctx, a probe's context, waiting
	// while the caller is over its budget. It fails only once ctx ends
	// (when the budget will not come before ctx's deadline, it waits for
	// the deadline), so that the expect ends as its probe's time does.
	Spend(ctx context.Context, steps int) error
}

type limiterKey struct{}

// limiterOf is the Limiter that the probes of ctx charge their matching
// to, set by cuttable; nil when there is none.
func limiterOf(ctx context.Context) Limiter {
	l, _ := ctx.Value(limiterKey{}).(Limiter)
	return l
}

func (s *Server) observe(ctx context.Context, r Report) {
	if s.cfg.Observe != nil {
		r.Abandoned = callerGone(ctx) != nil
		s.cfg.Observe(ctx, r)
	}
}

// Server implements netprobev1.ProbeServiceServer.
type Server struct {
	netprobev1.UnimplementedProbeServiceServer
	cfg Config

	// draining is closed by Drain.
	draining  chan struct{}
	drainOnce sync.Once
	// cuts cancels, with ErrShutdown, the Fetches and Sweeps running,
	// when Cut is called; cut is set from then on.
	mu      sync.Mutex
	cuts    map[*context.CancelCauseFunc]struct{}
	cutting bool
}

// ErrShutdown is the cause of a probe cut short because the server is
// shutting down (see Cut).
var ErrShutdown = errors.New("the probe server is shutting down")

// Drain starts the server's shutdown: a Sweep starts no new probe and
// reports the targets it has not started as abandoned.
func (s *Server) Drain() {
	s.drainOnce.Do(func() { close(s.draining) })
}

func (s *Server) isDraining() bool {
	select {
	case <-s.draining:
		return true
	default:
		return false
	}
}

// CutMargin is how long before a drain's grace period ends the probes
// still running are to be Cut, to send what they have: a quarter of the
// grace, at most 2 s. The gRPC server and the metrics listener cut theirs
// alike.
func CutMargin(grace time.Duration) time.Duration {
	return min(grace/4, 2*time.Second)
}

// Cut ends the Fetches and Sweeps still running, as the shutdown's grace
// period ends: a Fetch sends its summary (END_REASON_ERROR,
// REASON_SERVER_SHUTDOWN) and a Sweep reports what it had left as
// abandoned, each before its stream ends OK. Cut implies Drain.
func (s *Server) Cut() {
	s.Drain()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cutting = true
	for cancel := range s.cuts {
		(*cancel)(ErrShutdown)
	}
	clear(s.cuts)
}

// cuttable returns the context a Fetch or a Sweep runs its probes in: a
// context of ctx that Cut cancels, which carries the Limiter their expects
// charge their matching to (limiterOf). The function returned is to be
// called once the call is over.
func (s *Server) cuttable(ctx context.Context) (context.Context, func()) {
	if s.cfg.Limiter != nil {
		ctx = context.WithValue(ctx, limiterKey{}, s.cfg.Limiter)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	s.mu.Lock()
	if s.cutting {
		cancel(ErrShutdown)
	} else {
		s.cuts[&cancel] = struct{}{}
	}
	s.mu.Unlock()
	return ctx, func() {
		s.mu.Lock()
		delete(s.cuts, &cancel)
		s.mu.Unlock()
		cancel(context.Canceled)
	}
}

// Cuttable is ctx, ended by Cut (its cause ErrShutdown) as a drain's
// grace ends, as the server's own Fetches and Sweeps are; done is to be
// called once the work it bounds is over. A fleet's fan-out ends the
// nodes it still waits for by it, to send what it has before the drain
// stops the call.
func (s *Server) Cuttable(ctx context.Context) (cut context.Context, done func()) {
	return s.cuttable(ctx)
}

var _ netprobev1.ProbeServiceServer = (*Server)(nil)

// New returns a Server with cfg's zero fields set to their defaults.
func New(cfg Config) (*Server, error) {
	if err := settings.Defaults(&cfg.Limits); err != nil {
		return nil, err
	}
	if cfg.Resolver == nil {
		cfg.Resolver = ResolverFor(cfg.DNSServer)
	}
	if cfg.Policy == nil {
		cfg.Policy = policy.New()
	}
	if cfg.Services == nil {
		table, err := services.Load("")
		if err != nil {
			return nil, err
		}
		cfg.Services = table
	}
	if cfg.DefaultTimeout < 0 || cfg.MaxTimeout < cfg.DefaultTimeout {
		return nil, fmt.Errorf("config: need 0 < --default-timeout (%v) <= --max-timeout (%v)", cfg.DefaultTimeout, cfg.MaxTimeout)
	}
	if cfg.MaxPayloadBytes < 0 {
		return nil, fmt.Errorf("config: max payload bytes %d is negative", cfg.MaxPayloadBytes)
	}
	return &Server{cfg: cfg, draining: make(chan struct{}), cuts: map[*context.CancelCauseFunc]struct{}{}}, nil
}
