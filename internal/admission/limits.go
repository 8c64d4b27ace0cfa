package admission

import (
	"container/list"
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// inFlight caps the probes running at once, server-wide and per caller.
// A call over either cap fails at once with RESOURCE_EXHAUSTED: queueing
// would let one caller's backlog delay everyone. A Sweep's probes wait for
// a place instead, within the sweep's time (wait). Once draining, it
// refuses every new probe with UNAVAILABLE.
type inFlight struct {
	max, perCaller int
	refused        func(limit string)
	gauge          prometheus.Gauge

	mu       sync.Mutex
	draining bool
	total    int
	byCaller map[Caller]int
	// freed, when not nil, is closed when a place is given back, for the
	// probes waiting for one.
	freed chan struct{}
}

func newInFlight(max, perCaller int, refused func(string), gauge prometheus.Gauge) *inFlight {
	return &inFlight{max: max, perCaller: perCaller, refused: refused, gauge: gauge, byCaller: map[Caller]int{}}
}

var errDraining = status.Error(codes.Unavailable, "the server is shutting down")

// drain refuses every probe from now on, and wakes those waiting.
func (l *inFlight) drain() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.draining = true
	l.wakeLocked()
}

func (l *inFlight) wakeLocked() {
	if l.freed != nil {
		close(l.freed)
		l.freed = nil
	}
}

// acquire takes a place for a probe of the caller of ctx, or fails at
// once.
func (l *inFlight) acquire(ctx context.Context) (release func(), err error) {
	key := CallerOf(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.draining:
		return nil, errDraining
	case l.total >= l.max:
		l.refused("in_flight")
		return nil, status.Errorf(codes.ResourceExhausted, "the server is running its maximum of %d probes; try again later", l.max)
	case l.byCaller[key] >= l.perCaller:
		l.refused("in_flight_per_caller")
		return nil, status.Errorf(codes.ResourceExhausted, "%s is running its maximum of %d probes at once", key, l.perCaller)
	}
	return l.takeLocked(key), nil
}

// draining reports whether the server is draining: then new calls are
// refused.
func (l *inFlight) isDraining() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.draining
}

// wait takes a place for a probe of the caller of ctx, waiting for one
// while ctx lasts.
func (l *inFlight) wait(ctx context.Context) (release func(), err error) {
	key := CallerOf(ctx)
	for {
		l.mu.Lock()
		switch {
		case l.draining:
			l.mu.Unlock()
			return nil, errDraining
		case l.total < l.max && l.byCaller[key] < l.perCaller:
			release := l.takeLocked(key)
			l.mu.Unlock()
			return release, nil
		}
		if l.freed == nil {
			l.freed = make(chan struct{})
		}
		freed := l.freed
		l.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

func (l *inFlight) takeLocked(key Caller) (release func()) {
	l.total++
	l.byCaller[key]++
	l.gauge.Inc()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		if l.byCaller[key]--; l.byCaller[key] == 0 {
			delete(l.byCaller, key)
		}
		l.gauge.Dec()
		l.wakeLocked()
	}
}

// maxRateCallers bounds the rate limiter's memory: the callers it keeps a
// bucket for (about 200 bytes each).
const maxRateCallers = 16384

// rateLimiter gives each caller a token bucket: rate probes a second on
// average, burst at once. The table of buckets is bounded: when it is
// full, the caller seen least recently is forgotten to make room for a new
// one. A caller that keeps calling, even only to be refused, stays in the
// table and stays limited, however many others come; one that is
// forgotten has been idle while maxCallers others came, and comes back
// with a full burst, which is no more than a new address would have. So a
// new caller always has a bucket of its own: a crowd of callers at a low
// rate cannot make later ones share theirs.
type rateLimiter struct {
	// label names the limit in netprobe_limit_refusals_total.
	label      string
	rate       rate.Limit
	burst      int
	maxCallers int
	refused    func(limit string)

	mu      sync.Mutex
	callers map[Caller]*list.Element
	// recent orders the buckets by last use, the most recent first; its
	// values are *callerBucket.
	recent list.List
}

type callerBucket struct {
	key Caller
	lim *rate.Limiter
}

func newRateLimiter(label string, perSecond float64, burst int, refused func(string)) *rateLimiter {
	return &rateLimiter{
		label:      label,
		rate:       rate.Limit(perSecond),
		burst:      burst,
		maxCallers: maxRateCallers,
		refused:    refused,
		callers:    map[Caller]*list.Element{},
	}
}

// bucket returns key's bucket, making it the most recently used.
func (r *rateLimiter) bucket(key Caller) *rate.Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.callers[key]; ok {
		r.recent.MoveToFront(e)
		return e.Value.(*callerBucket).lim
	}
	if len(r.callers) >= r.maxCallers {
		oldest := r.recent.Back()
		delete(r.callers, oldest.Value.(*callerBucket).key)
		r.recent.Remove(oldest)
	}
	b := &callerBucket{key: key, lim: rate.NewLimiter(r.rate, r.burst)}
	r.callers[key] = r.recent.PushFront(b)
	return b.lim
}

// Limit refuses a probe over the caller's rate with RESOURCE_EXHAUSTED.
func (r *rateLimiter) Limit(ctx context.Context) error {
	key := CallerOf(ctx)
	if !r.bucket(key).Allow() {
		r.refused(r.label)
		return status.Errorf(codes.ResourceExhausted, "%s is over its rate of %g probes a second (burst %d)", key, float64(r.rate), r.burst)
	}
	return nil
}

// wait takes a token from the caller's bucket, waiting for one while ctx
// lasts.
func (r *rateLimiter) wait(ctx context.Context) error {
	if err := r.bucket(CallerOf(ctx)).Wait(ctx); err != nil {
		// The token will not come in time: as if the deadline had passed.
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return nil
}

// gate caps the calls of one kind that run at once, per caller and, when
// total is not 0, in all: over either cap a call fails at once with
// RESOURCE_EXHAUSTED. probed has two: the requests being read of
// calls that are not probes (health checks): a request that arrives whole
// is read in an instant, so the cap binds a caller that sends requests
// slowly or partly, each of which gRPC holds in memory as it arrives; and
// the streams that stay open without being probes (health Watch,
// reflection), each a goroutine and a request in memory; and the Sweeps,
// each holding its request, up to the largest message, for as long as it
// runs (its probes are counted by inFlight).
type gate struct {
	// what the gate counts, for the refusal's message; label and
	// totalLabel name its limits in netprobe_limit_refusals_total.
	what              string
	label, totalLabel string
	perCaller, total  int
	refused           func(limit string)

	mu       sync.Mutex
	n        int
	byCaller map[Caller]int
}

func newGate(what, label string, perCaller int, totalLabel string, total int, refused func(string)) *gate {
	return &gate{what: what, label: label, totalLabel: totalLabel, perCaller: perCaller, total: total, refused: refused, byCaller: map[Caller]int{}}
}

func (g *gate) acquire(ctx context.Context) (release func(), err error) {
	key := CallerOf(ctx)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.total > 0 && g.n >= g.total:
		g.refused(g.totalLabel)
		return nil, status.Errorf(codes.ResourceExhausted, "the server has its maximum of %d %s; try again later", g.total, g.what)
	case g.byCaller[key] >= g.perCaller:
		g.refused(g.label)
		return nil, status.Errorf(codes.ResourceExhausted, "%s has %d %s, its maximum", key, g.perCaller, g.what)
	}
	g.n++
	g.byCaller[key]++
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.n--
		if g.byCaller[key]--; g.byCaller[key] == 0 {
			delete(g.byCaller, key)
		}
	}, nil
}
