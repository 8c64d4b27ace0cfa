// Package probemetrics turns what a probe of /probe found into what the
// scrape answers: blackbox_exporter's metrics, with its names, labels,
// types and values, netprobe's own beside them (Additions), and the page
// debug=true asks for (the probe's dialogue as text, its module, its
// metrics and its report).
package probemetrics

import (
	"net/netip"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
)

// Result is what one probe of a module found: the probe service's
// reports, or the failure of a target that was not probed at all.
type Result struct {
	module *modules.Module
	// addressed says the target was HOST:PORT: blackbox_exporter then
	// resolves HOST, and gives its address metrics, 0 when it resolved
	// nothing. host is HOST.
	addressed bool
	host      string
	// failure is why the target was not probed at all.
	failure *netprobev1.ProbeError
	connect *netprobev1.ConnectResponse
	summary *netprobev1.FetchSummary
	matches []*netprobev1.ExpectMatch
	// dialogue is kept for debug=true only.
	dialogue *dialogue
}

// New begins the result of a probe of m. With debug, it keeps what the
// probe sent and received, to show it (bounded: see debugShown).
func New(m *modules.Module, debug bool) *Result {
	r := &Result{module: m}
	if debug {
		r.dialogue = &dialogue{steps: m.Steps, received: make([]clipped, len(m.Steps)+1), matched: map[int]*netprobev1.ExpectMatch{}}
	}
	return r
}

// Addressed says the target was HOST:PORT, with HOST host.
func (r *Result) Addressed(host string) {
	r.addressed, r.host = true, host
}

// Fail records why the target could not be probed: nothing was dialled.
func (r *Result) Fail(pe *netprobev1.ProbeError) {
	r.failure = pe
}

// Connected records a Connect's report.
func (r *Result) Connected(c *netprobev1.ConnectResponse) {
	r.connect = c
}

// Keep is the Emit of a Fetch: it keeps the connect report, the expects'
// matches and the summary, and with debug the bytes received.
func (r *Result) Keep(m *netprobev1.FetchResponse) error {
	switch ev := m.GetEvent().(type) {
	case *netprobev1.FetchResponse_Connect:
		r.connect = ev.Connect
	case *netprobev1.FetchResponse_Match:
		r.matches = append(r.matches, ev.Match)
		r.dialogue.match(ev.Match)
	case *netprobev1.FetchResponse_Data:
		r.dialogue.receive(ev.Data.GetData())
	case *netprobev1.FetchResponse_Summary:
		r.summary = ev.Summary
	}
	return nil
}

// Error is the probe's failure, if any.
func (r *Result) Error() *netprobev1.ProbeError {
	switch {
	case r.failure != nil:
		return r.failure
	case r.connect.GetError() != nil:
		return r.connect.GetError()
	}
	return r.summary.GetError()
}

// Succeeded says the probe ran and nothing failed.
func (r *Result) Succeeded() bool {
	return r.connect != nil && r.Error() == nil
}

// address is the address the probe connected to, or else the first it
// tried, or resolved, or the policy refused; or the host when it is an
// address and the probe failed before resolving it. It is invalid when
// resolving failed, as blackbox_exporter's is.
func (r *Result) address() netip.Addr {
	pe := r.Error()
	if pe.GetStage() == netprobev1.Stage_STAGE_RESOLVE {
		return netip.Addr{}
	}
	c := r.connect
	candidates := []string{c.GetPeerAddress()}
	if len(c.GetAttempts()) > 0 {
		candidates = append(candidates, c.GetAttempts()[0].GetAddress())
	}
	if pe.GetStage() == netprobev1.Stage_STAGE_POLICY {
		candidates = append(candidates, pe.GetAddress())
	}
	for _, s := range candidates {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return ap.Addr().Unmap()
		}
	}
	if len(c.GetResolvedAddresses()) > 0 {
		if a, err := netip.ParseAddr(c.GetResolvedAddresses()[0]); err == nil {
			return a.Unmap()
		}
	}
	if a, err := netip.ParseAddr(r.host); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}
