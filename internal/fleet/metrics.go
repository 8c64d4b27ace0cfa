package fleet

import "github.com/prometheus/client_golang/prometheus"

// metrics are a fleet's: the peers, and the fan-outs.
type metrics struct {
	peers        *prometheus.GaugeVec
	fanouts      prometheus.Counter
	nodeFailures *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "netprobe_fleet_peers",
			Help: "The peers of this node (--peers, this node among them when they name it), by state: up (answered when last asked who it is) or down.",
		}, []string{"state"}),
		fanouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netprobe_fanout_sweeps_total",
			Help: "Sweeps this node fanned out to its fleet (SweepRequest.vantages) as their entry.",
		}),
		nodeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netprobe_fanout_node_failures_total",
			Help: "Nodes that failed as a whole in a fan-out this node was the entry of, by node and gRPC code (UNAVAILABLE, DEADLINE_EXCEEDED, ...).",
		}, []string{"node", "code"}),
	}
	m.peers.WithLabelValues("up")
	m.peers.WithLabelValues("down")
	reg.MustRegister(m.peers, m.fanouts, m.nodeFailures)
	return m
}
