package service

import (
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// Limits of an ICMP echo (IcmpOptions), as the API documents them.
const (
	// DefaultEchoPayloadBytes is ping's.
	DefaultEchoPayloadBytes = 56
	// MaxEchoPayloadBytes, the cap of IcmpOptions.payload_bytes, fills a
	// 9,000-byte IPv4 packet (a jumbo frame), less its IP and ICMP
	// headers: enough to test a jumbo path's MTU, and one packet a probe
	// where 65,507 bytes would be 45 fragments.
	MaxEchoPayloadBytes = 9000 - 20 - 8
)

// icmpParams are validated IcmpOptions.
type icmpParams struct {
	payload      int
	dontFragment bool
	// ttl is 0 for the system's default.
	ttl int
}

// validateICMP checks an ICMP echo's options against its target: nil
// unless the target's network is ICMP.
func validateICMP(v *violations, field string, o *netprobev1.IcmpOptions, t target) *icmpParams {
	if t.network != "icmp" {
		if o != nil {
			v.add(field, "applies to an ICMP echo (network NETWORK_ICMP) only")
		}
		return nil
	}
	p := &icmpParams{payload: DefaultEchoPayloadBytes, dontFragment: o.GetDontFragment()}
	switch n := o.GetPayloadBytes(); {
	case n > MaxEchoPayloadBytes:
		v.add(field+".payload_bytes", "%d bytes is over the cap of %d", n, MaxEchoPayloadBytes)
	case n > 0:
		p.payload = int(n)
	}
	if o != nil && o.Ttl != nil {
		if n := o.GetTtl(); n < 1 || n > 255 {
			v.add(field+".ttl", "%d is out of range 1-255", n)
		} else {
			p.ttl = int(n)
		}
	}
	return p
}

// echo is an ICMP echo under way to one address (icmp_linux.go; other
// systems send none, icmp_other.go).
type echo struct {
	*icmpParams
	dst netip.Addr
	// src is the source address the probe asked for; the kernel chooses
	// when it is not valid.
	src netip.Addr
	// start is the probe's, for the errors' elapsed.
	start time.Time
}

// echoReport is how an echo went: the result, and the error when it
// failed, with the local address it went out from, when it got that far.
type echoReport struct {
	result *netprobev1.IcmpResult
	local  netip.Addr
	err    *netprobev1.ProbeError
}

// echo resolves the target and sends one ICMP echo to its first address,
// once the policy allows it, and reports it in p.resp: the ICMP probe's
// connect phase.
func (p *probing) echo() {
	t := &p.target
	addrs, err := p.s.resolve(p.pctx, *t)
	p.resolved = time.Since(p.start)
	resp := &netprobev1.ConnectResponse{ResolveDuration: durationpb.New(p.resolved)}
	p.resp = resp
	if err != nil {
		failed(resp, probeError(netprobev1.Stage_STAGE_RESOLVE, t.host, err, p.resolved), p.start)
		return
	}
	for _, a := range addrs {
		resp.ResolvedAddresses = append(resp.ResolvedAddresses, a.String())
	}
	dst := addrs[0]
	// An echo has no port: the policy sees port 0, which no rule of ports
	// covers.
	if err := p.s.cfg.Policy.Check(CallerFrom(p.pctx), netip.AddrPortFrom(dst, 0)); err != nil {
		failed(resp, probeError(netprobev1.Stage_STAGE_POLICY, dst.String(), err, time.Since(p.start)), p.start)
		return
	}
	e := &echo{icmpParams: p.icmp, dst: dst, src: t.source, start: p.start}
	r := e.run(p.pctx)
	resp.Icmp = r.result
	resp.PeerAddress = dst.String()
	if r.local.IsValid() {
		resp.LocalAddress = r.local.String()
	}
	if r.err != nil {
		failed(resp, r.err, p.start)
		return
	}
	resp.TotalDuration = durationpb.New(time.Since(p.start))
}

// fail is the ProbeError of err at stage.
func (e *echo) fail(stage netprobev1.Stage, err error) *netprobev1.ProbeError {
	return probeError(stage, e.dst.String(), err, time.Since(e.start))
}
