// Package audit records what every probe did, whichever way it came in:
// one log line a probe (caller, target, outcome, where it connected, the
// failure's stage and reason), the probe metrics, a ring of the last
// probes, and the targets failing now (failing.go), which the status page
// lists.
package audit

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/peer"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/service"
)

// Kept is how many probes the ring keeps.
const Kept = 100

// Recorder records the probes that ended.
type Recorder struct {
	logger         *slog.Logger
	probes         *prometheus.CounterVec
	phases         *prometheus.HistogramVec
	bytes          *prometheus.CounterVec
	policyRefusals *prometheus.CounterVec
	ring
	failing failing
}

// New returns a Recorder that logs to logger and registers its metrics on
// reg; each of refusals, the rules the target policy can refuse by,
// starts its count at zero.
func New(logger *slog.Logger, reg prometheus.Registerer, refusals []string) *Recorder {
	a := &Recorder{
		logger:  logger,
		ring:    ring{size: Kept, probes: make([]*Probe, 0, Kept)},
		failing: newFailing(FailingKept),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netprobe_probes_total",
			Help: "Probes that ended, by method and outcome (ok, failed, denied, abandoned), with the failed stage and reason.",
		}, []string{"method", "outcome", "stage", "reason"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "netprobe_probe_phase_seconds",
			Help:    "How long each phase of a probe took: resolve, connect, tls (the handshake, from the start or a start_tls step), first_byte (from the start) and total.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"method", "phase"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netprobe_fetch_bytes_total",
			Help: "Bytes Fetch probes sent to and received from targets.",
		}, []string{"direction"}),
		policyRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netprobe_policy_refusals_total",
			Help: "Addresses the target policy refused, by rule.",
		}, []string{"rule"}),
	}
	for _, rule := range refusals {
		a.policyRefusals.WithLabelValues(rule)
	}
	reg.MustRegister(a.probes, a.phases, a.bytes, a.policyRefusals)
	return a
}

// Observe records a probe that ended: one audit line, the metrics, and
// the ring of recent probes. It is the service's Config.Observe.
func (a *Recorder) Observe(ctx context.Context, r service.Report) {
	outcome, stage, reason := "ok", "", ""
	switch e := r.Error; {
	case r.Abandoned:
		outcome = "abandoned"
	case e.GetStage() == netprobev1.Stage_STAGE_POLICY:
		outcome = "denied"
		a.policyRefusals.WithLabelValues(e.GetRule()).Inc()
	case e != nil:
		outcome = "failed"
	}
	if e := r.Error; e != nil {
		stage, reason = e.GetStage().String(), e.GetReason().String()
	}
	a.probes.WithLabelValues(r.Method, outcome, stage, reason).Inc()
	c := r.Connect
	for _, t := range []*netprobev1.TlsResult{c.GetTls(), r.Summary.GetTls()} {
		if t.GetHandshakeDuration() != nil {
			a.phases.WithLabelValues(r.Method, "tls").Observe(t.GetHandshakeDuration().AsDuration().Seconds())
		}
	}
	if c.GetResolveDuration() != nil {
		a.phases.WithLabelValues(r.Method, "resolve").Observe(c.GetResolveDuration().AsDuration().Seconds())
	}
	// A refused target has no connect phase to speak of.
	if c.GetConnectDuration() != nil && outcome != "denied" {
		a.phases.WithLabelValues(r.Method, "connect").Observe(c.GetConnectDuration().AsDuration().Seconds())
	}
	if s := r.Summary; s != nil {
		a.bytes.WithLabelValues("sent").Add(float64(s.GetBytesSent()))
		a.bytes.WithLabelValues("received").Add(float64(s.GetBytesReceived()))
		if s.GetTimeToFirstByte() != nil {
			a.phases.WithLabelValues(r.Method, "first_byte").Observe(s.GetTimeToFirstByte().AsDuration().Seconds())
		}
	}
	a.phases.WithLabelValues(r.Method, "total").Observe(r.Duration.Seconds())

	target := targetText(r.Target)
	if r.Given != "" {
		target = r.Given
	}
	// Attrs rather than key-value pairs: a string made an any is an
	// allocation, and this is a line a probe.
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs,
		slog.String("method", r.Method),
		slog.String("caller", service.CallerFrom(ctx)),
		slog.String("target", target),
		slog.String("outcome", outcome),
		slog.Duration("duration", r.Duration),
	)
	if p, ok := peer.FromContext(ctx); ok {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	if by, ok := ctx.Value(forwardedByKey{}).(string); ok {
		attrs = append(attrs, slog.String("forwarded_by", by))
	}
	if c.GetPeerAddress() != "" {
		attrs = append(attrs, slog.String("connected_to", c.GetPeerAddress()))
	}
	if e := r.Error; e != nil {
		attrs = append(attrs, slog.String("stage", stage), slog.String("reason", reason), slog.String("errno", e.GetErrno()), slog.String("address", e.GetAddress()))
		if e.GetRule() != "" {
			attrs = append(attrs, slog.String("rule", e.GetRule()))
		}
		if where := StoppedAfter(r.Path); where != "" {
			attrs = append(attrs, slog.String("stopped_after", where))
		}
	}
	a.logger.LogAttrs(ctx, slog.LevelInfo, "probe", attrs...)
	a.failing.note(a.add(ctx, &r, target, outcome))
}

// targetText is a target as "network host:port" (or host:service), or
// "icmp host".
func targetText(t *netprobev1.Target) string {
	port := t.GetService()
	if port == "" {
		port = strconv.FormatUint(uint64(t.GetPort()), 10)
	}
	switch t.GetNetwork() {
	case netprobev1.Network_NETWORK_UDP:
		return "udp " + net.JoinHostPort(t.GetHost(), port)
	case netprobev1.Network_NETWORK_ICMP:
		// An echo has no port.
		return "icmp " + t.GetHost()
	}
	return "tcp " + net.JoinHostPort(t.GetHost(), port)
}

// Probe is a probe that ended, as the page lists it.
type Probe struct {
	ID   uint64
	Time time.Time
	Via  string
	// Caller is who asked: the name authentication gave it (a token's
	// name, a client certificate's identity, a web configuration user),
	// or "anonymous from ADDR", its peer's address.
	Caller  string
	Target  string
	Outcome string
	// Stage, Reason and Errno are the failure's, without their prefixes.
	Stage, Reason, Errno string
	// StoppedAfter is where the path to the target stopped, when the
	// probe failed and traced it (see StoppedAfter).
	StoppedAfter     string
	Peer             string
	Resolve, Connect time.Duration
	TLS, FirstByte   time.Duration
	Total            time.Duration

	// ConnectResponse, Summary and Error are its report.
	ConnectResponse *netprobev1.ConnectResponse
	Summary         *netprobev1.FetchSummary
	Error           *netprobev1.ProbeError
}

// ring is the last probes, from every way in.
type ring struct {
	mu     sync.Mutex
	next   uint64
	probes []*Probe // oldest first once full, from start
	start  int
	size   int
}

// viaKey marks the context of a probe made for another way in than gRPC.
type viaKey struct{}

// forwardedByKey marks the context of a call a peer of a fleet forwarded.
type forwardedByKey struct{}

// WithForwardedBy marks ctx's probes as run for a call the fleet's peer
// named peer forwarded: the log line and the page say so beside the
// caller.
func WithForwardedBy(ctx context.Context, peer string) context.Context {
	return context.WithValue(ctx, forwardedByKey{}, peer)
}

// WithVia marks ctx's probes as made through via (such as "/probe
// tcp_connect"), for the page; they are "gRPC METHOD" else.
func WithVia(ctx context.Context, via string) context.Context {
	return context.WithValue(ctx, viaKey{}, via)
}

// add records the probe of r, whose target reads target, and returns it.
func (rp *ring) add(ctx context.Context, r *service.Report, target, outcome string) *Probe {
	p := &Probe{Time: time.Now(), Via: "gRPC " + r.Method, Caller: service.CallerFrom(ctx), Target: target,
		Outcome: outcome, Peer: r.Connect.GetPeerAddress(), Total: r.Duration, ConnectResponse: r.Connect, Summary: r.Summary, Error: r.Error}
	if via, ok := ctx.Value(viaKey{}).(string); ok {
		p.Via = via
	}
	if by, ok := ctx.Value(forwardedByKey{}).(string); ok {
		p.Via += ", forwarded by " + by
	}
	if p.Caller == "" {
		p.Caller = "anonymous"
		if pr, ok := peer.FromContext(ctx); ok {
			p.Caller += " from " + pr.Addr.String()
		}
	}
	if e := r.Error; e != nil {
		p.Stage = strings.TrimPrefix(e.GetStage().String(), "STAGE_")
		p.Reason = strings.TrimPrefix(e.GetReason().String(), "REASON_")
		p.Errno = e.GetErrno()
		p.StoppedAfter = StoppedAfter(r.Path)
	}
	c := r.Connect
	p.Resolve, p.Connect = c.GetResolveDuration().AsDuration(), c.GetConnectDuration().AsDuration()
	for _, t := range []*netprobev1.TlsResult{c.GetTls(), r.Summary.GetTls()} {
		if t.GetHandshakeDuration() != nil {
			p.TLS = t.GetHandshakeDuration().AsDuration()
		}
	}
	p.FirstByte = r.Summary.GetTimeToFirstByte().AsDuration()

	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.next++
	p.ID = rp.next
	if len(rp.probes) < rp.size {
		rp.probes = append(rp.probes, p)
		return p
	}
	rp.probes[rp.start] = p
	rp.start = (rp.start + 1) % rp.size
	return p
}

// Recent returns the probes kept, newest first.
func (rp *ring) Recent() []*Probe {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	out := make([]*Probe, 0, len(rp.probes))
	for i := len(rp.probes) - 1; i >= 0; i-- {
		out = append(out, rp.probes[(rp.start+i)%len(rp.probes)])
	}
	return out
}

// Lookup returns the probe with id while the ring keeps it, or else, cut
// to its error, while it is the latest failure of a target failing now.
func (a *Recorder) Lookup(id uint64) *Probe {
	if p := a.ring.lookup(id); p != nil {
		return p
	}
	return a.failing.lookup(id)
}

// lookup returns the probe with id, if the ring still keeps it.
func (rp *ring) lookup(id uint64) *Probe {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	for _, p := range rp.probes {
		if p.ID == id {
			return p
		}
	}
	return nil
}
