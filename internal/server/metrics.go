package server

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/peer"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/batchwriter"
	"github.com/netprobe/netprobe/service"
)

// metrics are the probe metrics; the gRPC server's own come from
// go-grpc-middleware's Prometheus provider.
type metrics struct {
	probes   *prometheus.CounterVec
	phases   *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	inFlight prometheus.Gauge
	// connections counts the gRPC connections served.
	connections    prometheus.Gauge
	policyRefusals *prometheus.CounterVec
	limitRefusals  *prometheus.CounterVec
	// transportRefusals counts calls refused before they ran, and
	// connections closed, by reason.
	transportRefusals *prometheus.CounterVec
	// metricsConnections are the metrics listener's open connections.
	metricsConnections prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
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
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netprobe_probes_in_flight",
			Help: "Probes running now.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netprobe_grpc_connections",
			Help: "gRPC connections served now (see --max-connections).",
		}),
		policyRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netprobe_policy_refusals_total",
			Help: "Addresses the target policy refused, by rule.",
		}, []string{"rule"}),
		limitRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netprobe_limit_refusals_total",
			Help: "Calls refused with RESOURCE_EXHAUSTED, scrapes of /probe with 429, on the metrics listener basic auth attempts (429) and connections (closed as accepted, or evicted to make room), and expects held to their deadline by the budget of matching (match_steps_per_caller: the caller's --expect-rate; match_steps: all callers'), by limit (in_flight, in_flight_per_caller, rate, scrape_rate, reads_per_caller, watches_per_caller, watches, sweeps_per_caller, sweeps, basic_auth, match_steps_per_caller, match_steps, metrics_connections, metrics_connections_per_source, metrics_evicted).",
		}, []string{"limit"}),
		transportRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netprobe_transport_refusals_total",
			Help: "Calls refused for want of a valid token, gRPC and HTTP (unauthenticated); connections closed as they were accepted (connections, connections_per_source: over the caps, with none to evict), or to make room for a new one (evicted: unauthenticated ones, the oldest first); and connections closed with a GOAWAY (stream_resets: too many streams reset or refused; unauthenticated_idle: no authenticated call within the auth timeout; unauthenticated_data: more data than health checks take before authenticating).",
		}, []string{"reason"}),
		metricsConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netprobe_metrics_connections",
			Help: "Connections open on the metrics listener (--metrics-addr).",
		}),
	}
	// Every known label starts at zero, so that a rate() sees the first.
	for _, l := range append(slices.Clone(admission.Labels), "metrics_connections", "metrics_connections_per_source", "metrics_evicted") {
		m.limitRefusals.WithLabelValues(l)
	}
	for _, r := range []string{"unauthenticated", "stream_resets", "connections", "connections_per_source", "evicted", "unauthenticated_idle", "unauthenticated_data"} {
		m.transportRefusals.WithLabelValues(r)
	}
	reg.MustRegister(m.probes, m.phases, m.bytes, m.inFlight, m.connections, m.policyRefusals, m.limitRefusals, m.transportRefusals, m.metricsConnections,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe records a probe that ended: one audit line and the metrics.
func observe(logger *slog.Logger, m *metrics, recent *recentProbes) func(context.Context, service.Report) {
	return func(ctx context.Context, r service.Report) {
		outcome, stage, reason := "ok", "", ""
		switch e := r.Error; {
		case r.Abandoned:
			outcome = "abandoned"
		case e.GetStage() == netprobev1.Stage_STAGE_POLICY:
			outcome = "denied"
			m.policyRefusals.WithLabelValues(e.GetRule()).Inc()
		case e != nil:
			outcome = "failed"
		}
		if e := r.Error; e != nil {
			stage, reason = e.GetStage().String(), e.GetReason().String()
		}
		m.probes.WithLabelValues(r.Method, outcome, stage, reason).Inc()
		c := r.Connect
		for _, t := range []*netprobev1.TlsResult{c.GetTls(), r.Summary.GetTls()} {
			if t.GetHandshakeDuration() != nil {
				m.phases.WithLabelValues(r.Method, "tls").Observe(t.GetHandshakeDuration().AsDuration().Seconds())
			}
		}
		if c.GetResolveDuration() != nil {
			m.phases.WithLabelValues(r.Method, "resolve").Observe(c.GetResolveDuration().AsDuration().Seconds())
		}
		// A refused target has no connect phase to speak of.
		if c.GetConnectDuration() != nil && outcome != "denied" {
			m.phases.WithLabelValues(r.Method, "connect").Observe(c.GetConnectDuration().AsDuration().Seconds())
		}
		if s := r.Summary; s != nil {
			m.bytes.WithLabelValues("sent").Add(float64(s.GetBytesSent()))
			m.bytes.WithLabelValues("received").Add(float64(s.GetBytesReceived()))
			if s.GetTimeToFirstByte() != nil {
				m.phases.WithLabelValues(r.Method, "first_byte").Observe(s.GetTimeToFirstByte().AsDuration().Seconds())
			}
		}
		m.phases.WithLabelValues(r.Method, "total").Observe(r.Duration.Seconds())

		target := targetText(r.Target)
		attrs := []any{
			"method", r.Method,
			"caller", service.CallerFrom(ctx),
			"target", target,
			"outcome", outcome,
			"duration", r.Duration,
		}
		if p, ok := peer.FromContext(ctx); ok {
			attrs = append(attrs, "peer", p.Addr.String())
		}
		if c.GetPeerAddress() != "" {
			attrs = append(attrs, "connected_to", c.GetPeerAddress())
		}
		if e := r.Error; e != nil {
			attrs = append(attrs, "stage", stage, "reason", reason, "errno", e.GetErrno(), "address", e.GetAddress())
			if e.GetRule() != "" {
				attrs = append(attrs, "rule", e.GetRule())
			}
		}
		logger.InfoContext(ctx, "probe", attrs...)
		recent.add(ctx, &r, target, outcome)
	}
}

// targetText is a target as "network host:port" (or host:service).
func targetText(t *netprobev1.Target) string {
	port := t.GetService()
	if port == "" {
		port = strconv.FormatUint(uint64(t.GetPort()), 10)
	}
	network := "tcp"
	if t.GetNetwork() == netprobev1.Network_NETWORK_UDP {
		network = "udp"
	}
	return network + " " + net.JoinHostPort(t.GetHost(), port)
}

// registerLogStats exposes what the log's batching writer has done: the
// lines, the writes they made, and how long probes waited for room.
func registerLogStats(reg prometheus.Registerer, stats func() batchwriter.Stats) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "netprobe_log_lines_total", Help: "Lines written to the log (one audit line a probe, and the rest)."},
			func() float64 { return float64(stats().Writes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "netprobe_log_batches_total", Help: "Writes the log's lines were batched into."},
			func() float64 { return float64(stats().Batches) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "netprobe_log_wait_seconds_total", Help: "Time spent waiting for the log to take a line, when it could not keep up; no line is dropped."},
			func() float64 { return stats().Waited.Seconds() }),
	)
}
