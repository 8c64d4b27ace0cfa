package probemetrics

import (
	"log/slog"
	"time"

	"github.com/netprobe/netprobe/client"
	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
)

// vantageLabel is the label of a node's series in a fan-out's scrape.
const vantageLabel = "vantage"

// Fanout is what a probe of a module from a fleet's nodes found (/probe's
// from=): each node's result, the nodes that failed as a whole, the
// counts; or, when the target could not be probed anywhere, that.
type Fanout struct {
	module *modules.Module
	// whole is the target as given here: its host, and its failure when
	// it failed before any node was asked.
	whole *Result
	// nodes are the nodes' results, by node; failures the nodes that
	// failed as a whole. A node is its name and address, so that two
	// nodes of one name stay two.
	nodes    map[node]*Result
	failures map[node]*netprobev1.VantageError
	summary  *netprobev1.FanoutSummary
}

// NewFanout begins the result of a probe of m from a fleet's nodes.
func NewFanout(m *modules.Module) *Fanout {
	return &Fanout{module: m, whole: New(m, false), nodes: map[node]*Result{}, failures: map[node]*netprobev1.VantageError{}}
}

// Whole is the probe as this node sees it before asking any: Addressed
// gives its host to every node's result; Fail fails the target before
// any node is asked (one that is not HOST:PORT, that no node could take,
// a module that cannot run), and the scrape answers it as one probe that
// failed, with no node's series.
func (f *Fanout) Whole() *Result { return f.whole }

// Keep is the send of the fan-out's Sweep: it keeps each node's first
// result (the Sweep has one entry, which a node probes once), each node's
// failure and the counts. Nothing a node sends grows it past one result
// and one failure a node.
func (f *Fanout) Keep(r *netprobev1.SweepResponse) error {
	if s := r.GetFanout(); s != nil {
		f.summary = s
		return nil
	}
	n := node{r.GetVantage().GetNode(), r.GetVantage().GetAddress()}
	if e := r.GetVantageError(); e != nil {
		f.failures[n] = e
		return nil
	}
	if _, seen := f.nodes[n]; seen {
		return nil
	}
	res := New(f.module, false)
	res.Addressed(f.whole.host)
	res.swept(r)
	f.nodes[n] = res
	return nil
}

// labels are the vantage labels of the nodes' series, named as the CLI
// names its columns (client.VantageNames): NAME, or NAME@ADDRESS for
// nodes that share a name (a fleet whose nodes kept the host name), the
// same whichever answered first, so that no two nodes' series are one
// and a node's series keep their label from one scrape to the next.
func (f *Fanout) labels() map[node]string {
	var (
		nodes    []node
		vantages []client.Vantage
	)
	for n := range f.nodes {
		nodes = append(nodes, n)
	}
	for n := range f.failures {
		if _, ok := f.nodes[n]; !ok {
			nodes = append(nodes, n)
		}
	}
	for _, n := range nodes {
		vantages = append(vantages, client.Vantage{Node: n.name, Addr: n.addr})
	}
	out := map[node]string{}
	for i, name := range client.VantageNames(vantages) {
		out[nodes[i]] = name
	}
	return out
}

// node is a node of a fan-out: its name, and the address the entry
// reached it at ("" for the entry).
type node struct{ name, addr string }

// Exposition is the fan-out's metrics: each node's as one probe gives
// them, with its vantage label; probe_fanout_node_failure_info for each
// node that failed as a whole; the counts; and probe_success, 1 only when
// every node asked succeeded, with probe_duration_seconds, the whole
// scrape's, without a vantage. duration is the whole scrape's.
func (f *Fanout) Exposition(duration time.Duration, logger *slog.Logger) *Exposition {
	return &Exposition{parts: f.parts(duration, logger)}
}

// parts are the fan-out's metrics, as Exposition has them: its own
// first, then each node's with its vantage.
func (f *Fanout) parts(duration time.Duration, logger *slog.Logger) []*probeMetrics {
	p := &probeMetrics{}
	parts := []*probeMetrics{p}
	unprobed := f.whole.Error() != nil
	if unprobed {
		parts = append(parts, f.whole.metrics(duration, logger))
	}
	succeeded := 0
	labels := f.labels()
	for n, res := range f.nodes {
		label := labels[n]
		if res.Succeeded() {
			succeeded++
		}
		np := res.metrics(res.duration(), logger.With(vantageLabel, label))
		np.vantage = label
		parts = append(parts, np)
	}
	for n, e := range f.failures {
		label := labels[n]
		p.gauge(nodeFailure.metric, 1, label, e.GetCode())
		logger.Error("a node failed as a whole", vantageLabel, label, "code", e.GetCode(), "message", e.GetMessage())
	}
	asked, failed := int(f.summary.GetAsked()), int(f.summary.GetFailed())
	if !unprobed {
		p.gauge(metricSuccess, b2f(asked > 0 && succeeded == asked && failed == 0))
		p.gauge(metricDuration, duration.Seconds())
	}
	p.gauge(fanoutAsked.metric, float64(asked))
	p.gauge(fanoutSucceeded.metric, float64(succeeded))
	p.gauge(fanoutFailed.metric, float64(failed))
	p.gauge(fanoutSkipped.metric, float64(f.summary.GetSkipped()))
	return parts
}

// swept records a fanned-out Sweep's result of the probe. A probe the
// node's sweep gave up before it started (its caller's turn within the
// node's limits did not come in time) failed for a limit there.
func (r *Result) swept(s *netprobev1.SweepResponse) {
	r.connect, r.summary = s.GetConnect(), s.GetSummary()
	if r.connect == nil {
		r.failure = &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_POLICY, Reason: netprobev1.Reason_REASON_LIMIT,
			Message: "the node's sweep ended before the probe started: its turn within the node's limits did not come in time"}
	}
}

// duration is how long a node's probe took, as the node measured it.
func (r *Result) duration() time.Duration {
	if s := r.summary; s != nil {
		return s.GetTotalDuration().AsDuration()
	}
	return r.connect.GetTotalDuration().AsDuration()
}
