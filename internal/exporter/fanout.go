package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/audit"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/probemetrics"
	"github.com/netprobe/netprobe/service"
)

// maxSelectorBytes bounds from=: 64 node names of the longest (63
// bytes) and their commas fit.
const maxSelectorBytes = 4096

// Fleet runs /probe's from=: a Sweep from the fleet's nodes
// (fleet.Service), the one gRPC's Sweep with vantages runs.
type Fleet interface {
	// ValidateSweep is the INVALID_ARGUMENT a Sweep of req would be.
	ValidateSweep(req *netprobev1.SweepRequest) error
	// FanOut runs req from the nodes its vantages select, for the caller
	// of ctx, each response leaving through send.
	FanOut(ctx context.Context, req *netprobev1.SweepRequest, send func(*netprobev1.SweepResponse) error) error
}

// fanOut answers /probe?module=M&target=T&from=SELECTOR: m's probe of the
// target raw names, run by the nodes of this server's fleet that
// SELECTOR (probe sweep --from's syntax: all, node=a,b, KEY=VALUE, joined
// by commas) chooses, as one Sweep of one entry with those vantages. Each
// node's metrics are one probe's, labelled vantage="NODE"; beside them
// the nodes asked, succeeded and failed, and probe_success, 1 only when
// every node asked succeeded (probemetrics.Fanout). What is wrong with
// the scrape is an HTTP error, as for one probe, and so is a selector
// that cannot be (400), a server without peers or no node matching
// (400), and a module a Sweep entry cannot carry (400, unsweepable).
func (sc *scraper) fanOut(ctx context.Context, w http.ResponseWriter, r *http.Request, m *modules.Module, raw string, start time.Time) {
	q := r.URL.Query()
	sel, err := selector(q.Get("from"), q.Get("limit"))
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case q.Get("debug") == "true":
		http.Error(w, "debug=true shows one probe's dialogue, and from= runs none here: ask a node for it without from=", http.StatusBadRequest)
		return
	case sc.fleet == nil:
		http.Error(w, "from: this server runs no fleet", http.StatusBadRequest)
		return
	}
	if why := unsweepable(m); why != "" {
		http.Error(w, fmt.Sprintf("Module %q cannot run from a fleet's nodes (from=): %s", m.Name, why), http.StatusBadRequest)
		return
	}
	// The scrape spends a token of the scraper's scrape rate, as any
	// does; the place it takes among the probes in flight is given back
	// at once, as each node's probe takes its own there, as a Sweep's
	// probes do. The fan-out holds a place among its Sweeps, as gRPC's
	// does.
	release, err := sc.admission.Admit(ctx, admission.Scrape)
	if err == nil {
		release()
		release, err = sc.admission.Admit(ctx, admission.Sweep)
	}
	if err != nil {
		http.Error(w, status.Convert(err).Message(), httpStatus(status.Code(err)))
		return
	}
	defer release()

	// The scrape's timeout is the whole fan-out's: each node has it less
	// a margin for its results to come back, and its probe ends by then
	// (see fleet.Sweep).
	timeout, _ := scrapeTimeout(r.Header, sc.offset, m.Timeout, sc.maxTimeout)
	ctx, cancel := context.WithTimeout(audit.WithVia(ctx, "/probe "+m.Name+" from="+q.Get("from")), timeout)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	fo := probemetrics.NewFanout(m)
	err = sc.fanOutProbe(ctx, fo, m, raw, sel, timeout, logger)
	if errors.Is(context.Cause(ctx), service.ErrShutdown) {
		w.Header().Set("Connection", "close")
		http.Error(w, service.ErrShutdown.Error()+": the probe was cut short", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		http.Error(w, status.Convert(err).Message(), httpStatus(status.Code(err)))
		return
	}
	expose(w, r, q, fo.Exposition(time.Since(start), logger))
}

// fanOutProbe runs m against the target raw names from the nodes sel
// chooses, into fo. A target no node could take fails as one probe here
// would (fo.Whole); the error returned is the fleet's or the probe
// service's refusal of the scrape itself.
func (sc *scraper) fanOutProbe(ctx context.Context, fo *probemetrics.Fanout, m *modules.Module, raw string, sel *netprobev1.VantageSelector, timeout time.Duration, logger *slog.Logger) error {
	target := sc.target(ctx, fo.Whole(), m, raw, timeout, logger)
	if target == nil {
		return nil
	}
	req := &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{sweepEntry(m, target, timeout)}, Vantages: sel}
	if err := sc.fleet.ValidateSweep(req); err != nil {
		pe := targetFailure(err)
		if pe == nil {
			return err
		}
		sc.failed(ctx, fo.Whole(), m, "", target, timeout, pe)
		return nil
	}
	return sc.fleet.FanOut(ctx, req, fo.Keep)
}

// selector reads from=, as probe sweep --from reads its selector, and
// limit=, the most nodes asked ("" for the server's default).
func selector(from, limit string) (*netprobev1.VantageSelector, error) {
	if len(from) > maxSelectorBytes {
		return nil, fmt.Errorf("from: %d bytes, over the most a selector may have, %d", len(from), maxSelectorBytes)
	}
	v, err := client.ParseVantages(from)
	if err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	sel := &netprobev1.VantageSelector{All: v.All, Nodes: v.Nodes, Labels: v.Labels}
	if limit != "" {
		n, err := strconv.ParseUint(limit, 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("limit %q: want the most nodes to ask, 1 or more", limit[:min(len(limit), 32)])
		}
		sel.Limit = uint32(n)
	}
	return sel, nil
}

// unsweepable says why m cannot run on other nodes as a Sweep entry (a
// connect, a TLS handshake, a dialogue that ends with an expect, an ICMP
// echo, sent to each node as it is), or "" when it can.
func unsweepable(m *modules.Module) string {
	switch {
	case m.Prober == "udp":
		return "a Sweep entry sends no datagram (a udp module's netprobe.payload)"
	case m.ClientCert != nil:
		return "its client certificate (tls_config's cert_file and key_file) is this node's, which the others cannot present"
	case m.Source.IsValid():
		return "its source_ip_address is an address of this node"
	case len(m.Labels) > 0:
		return "a Sweep's dialogue reports no matches, of which probe_expect_info's labels are made"
	case m.ReadTimeout > 0 || m.MaxBytes > 0:
		return "a Sweep's dialogue has no read timeout and reads 64 KiB at most (netprobe.read_timeout, netprobe.max_bytes)"
	case m.ReverseLookup:
		return "a Sweep looks no address up (netprobe.reverse_lookup)"
	}
	return ""
}

// sweepEntry is m's probe of target as a Sweep entry: a Connect's
// target and TLS or ICMP options, or a dialogue's steps too.
func sweepEntry(m *modules.Module, target *netprobev1.Target, timeout time.Duration) *netprobev1.SweepTarget {
	connect, fetch := m.Request(target, timeout)
	if connect != nil {
		return &netprobev1.SweepTarget{Target: connect.GetTarget(), Timeout: connect.GetTimeout(), Tls: connect.GetTls(), Icmp: connect.GetIcmp(), Trace: connect.GetTrace()}
	}
	return &netprobev1.SweepTarget{Target: fetch.GetTarget(), Timeout: fetch.GetTimeout(), Tls: fetch.GetTls(), Steps: fetch.GetSteps()}
}
