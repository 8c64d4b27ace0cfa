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
	"github.com/netprobe/netprobe/policy"
)

// Defaults for Config fields left zero.
const (
	DefaultTimeout         = 5 * time.Second
	DefaultMaxTimeout      = 60 * time.Second
	DefaultMaxPayloadBytes = 1 << 20
	DefaultMaxFetchBytes   = 64 << 20
	// DefaultMaxSweepConcurrency caps the probes one Sweep runs at once.
	DefaultMaxSweepConcurrency = 64
	// DefaultMaxSweepTargets caps the targets of one Sweep: its entries,
	// and the addresses and SRV entries they expand to.
	DefaultMaxSweepTargets = 10000
)

// Config holds the server's limits, policy and resolvers. Zero fields take
// the defaults above; a nil Resolver is ResolverFor("").
type Config struct {
	// DefaultTimeout bounds a probe whose request sets no timeout.
	DefaultTimeout time.Duration
	// MaxTimeout is the largest timeout a request may ask for.
	MaxTimeout time.Duration
	// MaxPayloadBytes caps a Fetch request's payload.
	MaxPayloadBytes int
	// MaxFetchBytes caps how much one Fetch receives.
	MaxFetchBytes uint64
	// MaxSweepConcurrency caps the probes one Sweep runs at once; a sweep
	// asking for more gets this many.
	MaxSweepConcurrency int
	// MaxSweepTargets caps the targets of one Sweep: more entries are
	// INVALID_ARGUMENT, and the targets expanded past it are not probed
	// (REASON_LIMIT).
	MaxSweepTargets int
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
	Policy *policy.Policy
	// ClientIdentities are the client certificates probes may present,
	// as the Policy grants them; nil is none.
	ClientIdentities ClientIdentities
	// AllowedSources are the addresses a probe may bind as its source
	// (Target.source_address); none by default.
	AllowedSources []netip.Prefix
	// Limiter, when set, holds each probe of a Sweep to the server's
	// limits (Connect and Fetch are one probe a call, which the server
	// admits before the handler runs).
	Limiter Limiter
	// Observe, when set, is told of every probe (a Connect, a Fetch, each
	// probe of a Sweep) once it ends, for audit logs and metrics. It may be
	// called from several goroutines at once.
	Observe func(context.Context, Report)
}

// Report is what one Connect or Fetch did.
type Report struct {
	// Method is "Connect", "Fetch" or "Sweep" (one report a probe).
	Method string
	// Target is the target as the request gave it.
	Target *netprobev1.Target
	// Connect is the report of the connect phase.
	Connect *netprobev1.ConnectResponse
	// Summary is a Fetch's summary, once it got as far as the exchange.
	Summary *netprobev1.FetchSummary
	// Error is the probe's failure, a policy refusal included.
	Error *netprobev1.ProbeError
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

// cuttable returns a context of ctx that Cut cancels, and the function to
// call once the call is over.
func (s *Server) cuttable(ctx context.Context) (context.Context, func()) {
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

var _ netprobev1.ProbeServiceServer = (*Server)(nil)

// New returns a Server with cfg's zero fields set to their defaults.
func New(cfg Config) (*Server, error) {
	if cfg.DefaultTimeout == 0 {
		cfg.DefaultTimeout = DefaultTimeout
	}
	if cfg.MaxTimeout == 0 {
		cfg.MaxTimeout = DefaultMaxTimeout
	}
	if cfg.MaxPayloadBytes == 0 {
		cfg.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if cfg.MaxFetchBytes == 0 {
		cfg.MaxFetchBytes = DefaultMaxFetchBytes
	}
	if cfg.MaxSweepConcurrency == 0 {
		cfg.MaxSweepConcurrency = DefaultMaxSweepConcurrency
	}
	if cfg.MaxSweepTargets == 0 {
		cfg.MaxSweepTargets = DefaultMaxSweepTargets
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
		return nil, fmt.Errorf("config: need 0 < default timeout (%v) <= max timeout (%v)", cfg.DefaultTimeout, cfg.MaxTimeout)
	}
	if cfg.MaxPayloadBytes < 0 {
		return nil, fmt.Errorf("config: max payload bytes %d is negative", cfg.MaxPayloadBytes)
	}
	return &Server{cfg: cfg, draining: make(chan struct{}), cuts: map[*context.CancelCauseFunc]struct{}{}}, nil
}
