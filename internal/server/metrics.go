package server

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/batchwriter"
)

// metrics are the server's: what its listeners serve and refuse. The
// probes' are audit's, the gRPC calls' go-grpc-middleware's Prometheus
// provider's.
type metrics struct {
	inFlight prometheus.Gauge
	// connections counts the gRPC connections served.
	connections   prometheus.Gauge
	limitRefusals *prometheus.CounterVec
	// transportRefusals counts calls refused before they ran, and
	// connections closed, by reason.
	transportRefusals *prometheus.CounterVec
	// metricsConnections are the metrics listener's open connections.
	metricsConnections prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netprobe_probes_in_flight",
			Help: "Probes running now.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netprobe_grpc_connections",
			Help: "gRPC connections served now (see --max-connections).",
		}),
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
	reg.MustRegister(m.inFlight, m.connections, m.limitRefusals, m.transportRefusals, m.metricsConnections,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
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
