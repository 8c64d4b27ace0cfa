package server

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/service"
)

// caller is who a limit counts against: the authenticated caller, or for
// an anonymous one the peer's IPv4 address or IPv6 /64 (a host commonly
// has a whole /64 to pick addresses from). It is a value, not a string,
// so that counting a probe allocates nothing.
type caller struct {
	name string
	peer netip.Prefix
}

func callerOf(ctx context.Context) caller {
	if name := service.CallerFrom(ctx); name != "" {
		return caller{name: name}
	}
	if p, ok := peer.FromContext(ctx); ok {
		if a, ok := p.Addr.(*net.TCPAddr); ok {
			ip := a.AddrPort().Addr().Unmap()
			bits := 32
			if ip.Is6() {
				bits = 64
			}
			p, _ := ip.Prefix(bits)
			return caller{peer: p}
		}
	}
	return caller{}
}

func (c caller) String() string {
	switch {
	case c.name != "":
		return c.name
	case c.peer.IsValid() && c.peer.Addr().Is4():
		return "peer " + c.peer.Addr().String()
	case c.peer.IsValid():
		return "peer " + c.peer.String()
	}
	return "anonymous"
}

// inFlight caps the probes running at once, server-wide and per caller.
// Over either cap a call fails at once with RESOURCE_EXHAUSTED: queueing
// would let one caller's backlog delay everyone. Once draining, it refuses
// every new probe with UNAVAILABLE.
type inFlight struct {
	max, perCaller int
	metrics        *metrics
	// draining refuses every new probe once shutdown has begun.
	draining atomic.Bool

	mu       sync.Mutex
	total    int
	byCaller map[caller]int
}

func newInFlight(max, perCaller int, m *metrics) *inFlight {
	return &inFlight{max: max, perCaller: perCaller, metrics: m, byCaller: map[caller]int{}}
}

func (l *inFlight) acquire(ctx context.Context) (release func(), err error) {
	if l.draining.Load() {
		return nil, status.Error(codes.Unavailable, "the server is shutting down")
	}
	key := callerOf(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.max:
		l.metrics.limitRefusals.WithLabelValues("in_flight").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "the server is running its maximum of %d probes; try again later", l.max)
	case l.byCaller[key] >= l.perCaller:
		l.metrics.limitRefusals.WithLabelValues("in_flight_per_caller").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "%s is running its maximum of %d probes at once", key, l.perCaller)
	}
	l.total++
	l.byCaller[key]++
	l.metrics.inFlight.Inc()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		if l.byCaller[key]--; l.byCaller[key] == 0 {
			delete(l.byCaller, key)
		}
		l.metrics.inFlight.Dec()
	}, nil
}

// maxRateCallers bounds the rate limiter's memory: past that many callers
// seen, the table starts afresh.
const maxRateCallers = 4096

// rateLimiter gives each caller a token bucket: rate probes a second on
// average, burst at once.
type rateLimiter struct {
	rate    rate.Limit
	burst   int
	metrics *metrics

	mu      sync.Mutex
	callers map[caller]*rate.Limiter
}

func newRateLimiter(perSecond float64, burst int, m *metrics) *rateLimiter {
	return &rateLimiter{rate: rate.Limit(perSecond), burst: burst, metrics: m, callers: map[caller]*rate.Limiter{}}
}

// Limit refuses a probe over the caller's rate with RESOURCE_EXHAUSTED.
func (r *rateLimiter) Limit(ctx context.Context) error {
	key := callerOf(ctx)
	r.mu.Lock()
	lim, ok := r.callers[key]
	if !ok {
		if len(r.callers) >= maxRateCallers {
			clear(r.callers)
		}
		lim = rate.NewLimiter(r.rate, r.burst)
		r.callers[key] = lim
	}
	r.mu.Unlock()
	if !lim.Allow() {
		r.metrics.limitRefusals.WithLabelValues("rate").Inc()
		return status.Errorf(codes.ResourceExhausted, "%s is over its rate of %g probes a second (burst %d)", key, float64(r.rate), r.burst)
	}
	return nil
}

// readGate caps the requests of one caller that are being read at once,
// for the calls that are not probes (health checks and reflection): over
// the cap a call fails at once with
// RESOURCE_EXHAUSTED. A request that arrives whole is read in an instant;
// the cap binds a caller that sends requests slowly or partly, each of
// which gRPC holds in memory as it arrives.
type readGate struct {
	perCaller int
	metrics   *metrics

	mu       sync.Mutex
	byCaller map[caller]int
}

func newReadGate(perCaller int, m *metrics) *readGate {
	return &readGate{perCaller: perCaller, metrics: m, byCaller: map[caller]int{}}
}

func (g *readGate) acquire(ctx context.Context) (release func(), err error) {
	key := callerOf(ctx)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byCaller[key] >= g.perCaller {
		g.metrics.limitRefusals.WithLabelValues("reads_per_caller").Inc()
		// A caller opening stream after stream only to have them refused
		// is on its way to a GOAWAY.
		chargeStream(ctx)
		return nil, status.Errorf(codes.ResourceExhausted, "%s is sending %d requests at once, its maximum", key, g.perCaller)
	}
	g.byCaller[key]++
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.byCaller[key]--; g.byCaller[key] == 0 {
			delete(g.byCaller, key)
		}
	}, nil
}
