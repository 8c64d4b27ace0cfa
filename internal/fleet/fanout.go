package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/service"
)

// defaultFanout is how many nodes a selector without a limit asks.
const defaultFanout = 50

// Fleet is this node and its peers.
type Fleet struct {
	cfg     Config
	node    *Node
	peers   *Peers
	metrics *metrics
	logger  *slog.Logger
}

// New is the node cfg describes, with its peers found through resolver;
// its metrics are registered on reg.
func New(cfg Config, resolver *net.Resolver, reg prometheus.Registerer, logger *slog.Logger) (*Fleet, error) {
	node, err := NewNode(cfg)
	if err != nil {
		return nil, err
	}
	m := newMetrics(reg)
	peers, err := NewPeers(cfg, resolver, node.Instance, logger)
	if err != nil {
		return nil, err
	}
	peers.gauge = m.peers
	return &Fleet{cfg: cfg, node: node, peers: peers, metrics: m, logger: logger}, nil
}

// Node is this node.
func (f *Fleet) Node() *Node { return f.node }

// Peers are its peers.
func (f *Fleet) Peers() *Peers { return f.peers }

// MaxFanout is the most nodes a fan-out may ask: 0 without peers.
func (f *Fleet) MaxFanout() int {
	if !f.peers.Configured() {
		return 0
	}
	return f.cfg.MaxFanout
}

// Run keeps the peers current until ctx ends.
func (f *Fleet) Run(ctx context.Context) { f.peers.Run(ctx) }

// Local is this node's probe service, as a fan-out uses it.
type Local interface {
	// SweepTo runs a sweep on this node, its results leaving through
	// send.
	SweepTo(ctx context.Context, req *netprobev1.SweepRequest, send func(*netprobev1.SweepResponse) error) error
	// Cuttable is ctx, ended with the cause service.ErrShutdown when the
	// node's drain cuts its own sweeps short; done is called once the
	// fan-out is over.
	Cuttable(ctx context.Context) (cut context.Context, done func())
}

// vantage is one node a fan-out asks.
type vantage struct {
	Peer
	// local is true for this node, which runs its part itself.
	local bool
}

// Sweep runs req, whose vantages are set, from the nodes they select:
// this one through local, the others by a Sweep of their own, which
// names caller to them; every result leaves through send with its
// vantage, then the counts. A node that fails as a whole is one
// vantage_error; only a selector that cannot be, or no node selected,
// fails the call.
func (f *Fleet) Sweep(ctx context.Context, req *netprobev1.SweepRequest, caller string, send func(*netprobev1.SweepResponse) error, local Local) error {
	chosen, skipped, err := f.choose(req)
	if err != nil {
		return err
	}
	fwd := proto.CloneOf(req)
	// Depth 1: what a node is sent never fans out again.
	fwd.Vantages = nil
	nctx, cancel := nodeContext(ctx)
	defer cancel()
	f.metrics.fanouts.Inc()
	// A drain of this node cuts the other nodes still sending as it cuts
	// this node's own sweep (which sees to its cut itself): each is then
	// UNAVAILABLE after what it sent, and the call ends with the counts
	// before the drain stops it.
	rctx, done := local.Cuttable(nctx)
	defer done()

	var (
		mu       sync.Mutex
		sendErr  error
		answered int
		failed   int
	)
	out := func(v *netprobev1.Vantage) func(*netprobev1.SweepResponse) error {
		return func(r *netprobev1.SweepResponse) error {
			mu.Lock()
			defer mu.Unlock()
			if sendErr == nil {
				r.Vantage = v
				sendErr = send(r)
			}
			return sendErr
		}
	}
	var wg sync.WaitGroup
	for _, v := range chosen {
		wg.Go(func() {
			pv := &netprobev1.Vantage{Node: v.Node, Labels: maps.Clone(v.Labels)}
			var err error
			vctx := nctx
			if v.local {
				err = local.SweepTo(vctx, fwd, out(pv))
			} else {
				vctx = rctx
				pv.Address = v.Addr.String()
				err = f.remote(vctx, v.Peer, caller, fwd, out(pv))
			}
			if err != nil && ctx.Err() == nil {
				verr := vantageError(err, vctx)
				f.metrics.nodeFailures.WithLabelValues(v.Node, verr.Code).Inc()
				f.logger.Warn("fan-out: a node failed", "node", v.Node, "addr", pv.Address, "code", verr.Code, "err", verr.Message)
				if verr.Code == codeName(codes.Unavailable) && vctx.Err() == nil {
					// Not cut by this node's drain: the node itself failed.
					f.peers.Failed()
				}
				out(pv)(&netprobev1.SweepResponse{VantageError: verr})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
			} else {
				answered++
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if sendErr != nil {
		return sendErr
	}
	return send(&netprobev1.SweepResponse{Fanout: &netprobev1.FanoutSummary{
		Asked: uint32(len(chosen)), Answered: uint32(answered), Failed: uint32(failed), Skipped: uint32(skipped)}})
}

// choose picks the nodes req's selector names, this one among them when
// it is selected, or says why it cannot; skipped are the nodes it matched
// past its limit.
func (f *Fleet) choose(req *netprobev1.SweepRequest) (chosen []vantage, skipped int, err error) {
	sel := req.GetVantages()
	if err := f.checkSelector(sel); err != nil {
		return nil, 0, err
	}
	limit := int(sel.GetLimit())
	switch {
	case limit == 0:
		limit = min(defaultFanout, f.cfg.MaxFanout)
	case limit > f.cfg.MaxFanout:
		return nil, 0, status.Errorf(codes.InvalidArgument, "vantages.limit: %d is over the server's maximum of %d (--max-fanout)", limit, f.cfg.MaxFanout)
	}
	if !f.peers.Configured() {
		return nil, 0, status.Error(codes.FailedPrecondition, "vantages: this server has no peers (probed --peers), so it cannot fan a sweep out")
	}
	var all []vantage
	self := false
	instances := map[string]bool{}
	for _, p := range f.peers.All() {
		if p.Instance != "" {
			if instances[p.Instance] {
				continue // a node under a second address
			}
			instances[p.Instance] = true
		}
		self = self || p.Self
		if p.Node == "" {
			// Never heard from: it is only "all" that selects it, by its
			// address.
			if !sel.GetAll() {
				continue
			}
			p.Node = p.Addr.String()
		}
		all = append(all, vantage{Peer: p, local: p.Self})
	}
	if !self {
		all = append(all, vantage{Peer: Peer{Node: f.node.Name, Labels: f.node.Labels, Self: true, Up: true}, local: true})
	}
	for _, v := range all {
		if Matches(sel, v.Node, v.Labels) {
			chosen = append(chosen, v)
		}
	}
	// This node first, then by name: a limit never leaves out the node
	// that was asked.
	slices.SortStableFunc(chosen, func(a, b vantage) int {
		if a.local != b.local {
			if a.local {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Node, b.Node)
	})
	if len(chosen) == 0 {
		return nil, 0, status.Errorf(codes.FailedPrecondition, "vantages: no node matches %s; %s", describeSelector(sel), describeKnown(all))
	}
	skipped = max(len(chosen)-limit, 0)
	chosen = chosen[:min(len(chosen), limit)]
	if probes := len(chosen) * len(req.GetTargets()); probes > f.cfg.MaxFanoutProbes {
		return nil, 0, status.Errorf(codes.ResourceExhausted, "vantages: %d %s times %d %s is %d probes, over the server's maximum of %d (--max-fanout-probes)",
			len(chosen), plural(len(chosen), "node", "nodes"), len(req.GetTargets()), plural(len(req.GetTargets()), "target", "targets"), probes, f.cfg.MaxFanoutProbes)
	}
	return chosen, skipped, nil
}

// checkSelector refuses a selector that selects nothing, or names nodes
// or labels no node could have (as --node-name and --label have them),
// or more of them than a fan-out may ask.
func (f *Fleet) checkSelector(sel *netprobev1.VantageSelector) error {
	switch {
	case !sel.GetAll() && len(sel.GetNodes()) == 0 && len(sel.GetLabels()) == 0:
		return status.Error(codes.InvalidArgument, "vantages: select all, nodes or labels")
	case sel.GetAll() && (len(sel.GetNodes()) > 0 || len(sel.GetLabels()) > 0):
		return status.Error(codes.InvalidArgument, "vantages.all: all selects every node, and goes alone; give nodes or labels without it")
	case len(sel.GetNodes()) > f.cfg.MaxFanout:
		return status.Errorf(codes.InvalidArgument, "vantages.nodes: %d names, over the server's maximum of %d nodes a fan-out asks (--max-fanout)", len(sel.GetNodes()), f.cfg.MaxFanout)
	case len(sel.GetLabels()) > maxLabels:
		return status.Errorf(codes.InvalidArgument, "vantages.labels: %d pairs, over the %d labels a node may have", len(sel.GetLabels()), maxLabels)
	}
	for i, n := range sel.GetNodes() {
		if err := checkLabelText(fmt.Sprintf("vantages.nodes[%d]:", i), n); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
	}
	for k, v := range sel.GetLabels() {
		if err := checkLabelText("vantages.labels: key", k); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if err := checkLabelText("vantages.labels["+k+"]: value", v); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
	}
	return nil
}

// describeSelector is sel as a message says it: a checked selector, its
// names cut to the first few.
func describeSelector(sel *netprobev1.VantageSelector) string {
	var parts []string
	if sel.GetAll() {
		parts = append(parts, "all")
	}
	if nodes := sel.GetNodes(); len(nodes) > 0 {
		const shown = 5
		names := strings.Join(nodes[:min(len(nodes), shown)], ",")
		if len(nodes) > shown {
			names += fmt.Sprintf(" and %d more", len(nodes)-shown)
		}
		parts = append(parts, "nodes "+names)
	}
	for _, k := range slices.Sorted(maps.Keys(sel.GetLabels())) {
		parts = append(parts, k+"="+sel.GetLabels()[k])
	}
	return strings.Join(parts, " and ")
}

// describeKnown names the nodes a selector could have chosen, for a
// refusal: the first few, each with its labels.
func describeKnown(all []vantage) string {
	const shown = 5
	slices.SortFunc(all, func(a, b vantage) int { return strings.Compare(a.Node, b.Node) })
	var names []string
	for _, v := range all[:min(len(all), shown)] {
		name := v.Node
		if len(v.Labels) > 0 {
			labels := strings.Join(LabelList(v.Labels), ",")
			if len(labels) > 80 {
				labels = labels[:80] + "..."
			}
			name += " (" + labels + ")"
		}
		names = append(names, name)
	}
	known := "the nodes known are " + strings.Join(names, ", ")
	if len(all) > shown {
		known += fmt.Sprintf(" and %d more", len(all)-shown)
	}
	return known
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// remote runs fwd on peer p, naming caller to it, each result leaving
// through out. What the peer sends is checked before it leaves: a node
// that sends what no node's own sweep can (a vantage, the counts, a
// target the request has not, more results than a target gives) is cut
// there, INTERNAL, rather than allowed to speak for the entry, or to
// flood the caller.
func (f *Fleet) remote(ctx context.Context, p Peer, caller string, fwd *netprobev1.SweepRequest, out func(*netprobev1.SweepResponse) error) error {
	conn := f.peers.conn(p.Addr)
	if conn == nil {
		return status.Error(codes.Unavailable, "the peer is gone from --peers")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := netprobev1.NewProbeServiceClient(conn).Sweep(f.peers.outgoing(ctx, caller), fwd)
	if err != nil {
		return err
	}
	given := make([]int, len(fwd.GetTargets()))
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := checkForwarded(fwd, r, given); err != nil {
			return err
		}
		if err := out(r); err != nil {
			return err
		}
	}
}

// maxExpanded is the most targets an expanded entry can give: the
// addresses or SRV records of one DNS answer, at most 64 KiB over TCP of
// records of at least 16 bytes.
const maxExpanded = 4096

// checkForwarded refuses r, a peer's response to fwd, when no node's own
// sweep could send it; given counts the results so far by index.
func checkForwarded(fwd *netprobev1.SweepRequest, r *netprobev1.SweepResponse, given []int) error {
	broke := func(format string, args ...any) error {
		return status.Errorf(codes.Internal, "the node broke the protocol: "+format+"; its results stop here", args...)
	}
	switch {
	case r.GetVantage() != nil || r.GetVantageError() != nil || r.GetFanout() != nil:
		return broke("it sent a vantage, a vantage_error or fanout counts, which only an entry sends")
	case int(r.GetIndex()) >= len(given):
		return broke("it sent a result for target %d of a sweep of %d", r.GetIndex(), len(given))
	}
	given[r.GetIndex()]++
	most := 1
	if fwd.GetTargets()[r.GetIndex()].GetExpand() != netprobev1.Expand_EXPAND_UNSPECIFIED {
		most = maxExpanded
	}
	if given[r.GetIndex()] > most {
		return broke("it sent more than %d %s for target %d", most, plural(most, "result", "results"), r.GetIndex())
	}
	return nil
}

// nodeContext is ctx for the nodes of a fan-out: its deadline a margin
// before the call's, so that what the nodes send, a node cut for being
// late included, reaches the caller in time.
func nodeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	left := time.Until(d)
	return context.WithDeadline(ctx, d.Add(-min(left/4, max(left/10, 250*time.Millisecond))))
}

// vantageError is a node's failure as its response says it: the status
// the node or its connection gave, DEADLINE_EXCEEDED when it was cut at
// vctx's deadline, UNAVAILABLE when this node's drain cut it.
func vantageError(err error, vctx context.Context) *netprobev1.VantageError {
	switch cause := context.Cause(vctx); {
	case errors.Is(cause, context.DeadlineExceeded):
		d, _ := vctx.Deadline()
		return &netprobev1.VantageError{Code: codeName(codes.DeadlineExceeded),
			Message: fmt.Sprintf("the node had not finished by %s, the call's deadline less a margin; its results so far are above", d.UTC().Format(time.RFC3339Nano))}
	case errors.Is(cause, service.ErrShutdown):
		return &netprobev1.VantageError{Code: codeName(codes.Unavailable),
			Message: "the node had not finished when the server that took the call, draining, cut its calls short; its results so far are above"}
	}
	st := status.Convert(err)
	msg := st.Message()
	if st.Code() == codes.Unauthenticated {
		msg += " (the node took no credential of this node's: its --tokens-file must hold the token of this node's --peer-token-file, or its --tls-client-ca the CA of --peer-cert-file)"
	}
	return &netprobev1.VantageError{Code: codeName(st.Code()), Message: msg}
}

// codeName is c's canonical name, as grpcurl and the gRPC docs write it:
// DEADLINE_EXCEEDED, not Go's DeadlineExceeded.
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}
