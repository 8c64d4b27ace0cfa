package client

import (
	"context"
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// ConnectOptions tunes Connect. The zero value asks for the server's default
// timeout and no reverse lookup.
type ConnectOptions struct {
	// Timeout bounds the probe (service lookup, resolve and connect); zero
	// is the server's default. The ctx deadline, when sooner, wins, and its
	// passing is a DEADLINE_EXCEEDED call error rather than a probe result.
	Timeout time.Duration
	// ReverseLookup asks for the peer address's names (PTR) once connected.
	ReverseLookup bool
	// TLS, when set, makes the probe a TLS handshake after connecting.
	TLS *TLSOptions
	// Source, when set, is the local address to connect from; the probe
	// server must allow it (probed --allow-source).
	Source netip.Addr
	// Trace, when set, also traces the network path to the address the
	// probe reached or failed at: when it failed, or always (see
	// TraceOptions). ConnectResult.Path reports it.
	Trace *TraceOptions
	// ICMP shapes the echo of an ICMP probe (network "icmp", "icmp4",
	// "icmp6"); nil takes the defaults.
	ICMP *ICMPOptions
}

// ConnectResult is the report of a connect phase.
type ConnectResult struct {
	// LocalAddr and RemoteAddr are the two ends of the connection the
	// server made; zero when it connected nowhere.
	LocalAddr, RemoteAddr netip.AddrPort
	// Port is the port dialled, after any service lookup.
	Port uint16
	// Resolved lists the host's addresses, in the order they were tried.
	Resolved []netip.Addr
	// Attempts is every connection attempt, in the order they started.
	Attempts []Attempt
	// ResolveDuration is the time from the start of the probe to the end of
	// name resolution; ConnectDuration the time the attempts took;
	// TotalDuration the whole probe.
	ResolveDuration, ConnectDuration, TotalDuration time.Duration
	// ReverseLookup is the PTR lookup, when ConnectOptions asked for one.
	ReverseLookup *ReverseLookup
	// TLS is the handshake, when one was asked for and the connection got
	// that far.
	TLS *TLSResult
	// TCPInfo is the kernel's view of the connection right after it was
	// made, where the server's system gives it (Linux).
	TCPInfo *TCPInfo
	// Path is the network path to the address probed, when
	// ConnectOptions.Trace asked for one and the probe got as far as an
	// address. A failed probe's ProbeError.Connect carries it too.
	Path *Path
	// ICMP is the echo of an ICMP probe, once it had an address.
	ICMP *ICMPResult

	proto *netprobev1.ConnectResponse
}

// TCPInfo is what the kernel knows of a TCP connection (TCP_INFO).
type TCPInfo struct {
	// RTT is the smoothed round-trip time, RTTVar its mean deviation,
	// MinRTT the least seen.
	RTT, RTTVar, MinRTT time.Duration
	// Retransmits counts the unanswered sends of the segment in flight,
	// TotalRetransmits every segment sent again, Lost those thought lost.
	Retransmits, TotalRetransmits, Lost uint32
	// SndMSS and RcvMSS are the largest segments sent and received,
	// PathMTU the path MTU, in bytes; SndCwnd the congestion window, in
	// segments.
	SndMSS, RcvMSS, PathMTU, SndCwnd uint32
	// DeliveryRate is the latest delivery rate, in bytes a second;
	// BytesAcked and BytesReceived count the connection's bytes.
	DeliveryRate, BytesAcked, BytesReceived uint64
}

func newTCPInfo(ti *netprobev1.TcpInfo) *TCPInfo {
	if ti == nil {
		return nil
	}
	return &TCPInfo{
		RTT: ti.GetRtt().AsDuration(), RTTVar: ti.GetRttVar().AsDuration(), MinRTT: ti.GetMinRtt().AsDuration(),
		Retransmits: ti.GetRetransmits(), TotalRetransmits: ti.GetTotalRetransmits(), Lost: ti.GetLost(),
		SndMSS: ti.GetSndMss(), RcvMSS: ti.GetRcvMss(), PathMTU: ti.GetPathMtu(), SndCwnd: ti.GetSndCwnd(),
		DeliveryRate: ti.GetDeliveryRateBytesPerSecond(), BytesAcked: ti.GetBytesAcked(), BytesReceived: ti.GetBytesReceived(),
	}
}

// Proto returns the response as the server sent it, for printing it as JSON
// or passing it on.
func (r *ConnectResult) Proto() *netprobev1.ConnectResponse { return r.proto }

// Attempt is one connection attempt to one address.
type Attempt struct {
	// Addr is the "ip:port" tried.
	Addr netip.AddrPort
	// Start is when the attempt began, counted from the first attempt's
	// start; Duration how long it took.
	Start, Duration time.Duration
	// Err is why it failed; nil when it connected or was abandoned.
	Err *ProbeError
	// Abandoned is true when another attempt connected first, or the probe
	// ran out of time, before this one ended.
	Abandoned bool
}

// ReverseLookup is the result of looking the peer's address up by address.
type ReverseLookup struct {
	// Names are the PTR names found.
	Names []string
	// Duration is how long the lookup took.
	Duration time.Duration
	// Err is why it failed; nil when it answered. A failed reverse lookup
	// does not fail the probe.
	Err *ProbeError
}

// Connect asks the probe server to connect to address on network, as
// net.Dial would, and to report what happened. The server closes the
// connection right away. On network "icmp", "icmp4" or "icmp6" it sends
// an ICMP echo to address, a host with no port, instead (as ping does):
// ConnectResult.ICMP reports it.
//
// A probe that ran and failed returns the report so far together with a
// *ProbeError; any other error is the call's own (a gRPC status error).
func (c *Client) Connect(ctx context.Context, network, address string, opts ConnectOptions) (*ConnectResult, error) {
	t, err := target(network, address)
	if err != nil {
		return nil, err
	}
	t.SourceAddress = sourceAddress(opts.Source)
	req := &netprobev1.ConnectRequest{Target: t, ReverseLookup: opts.ReverseLookup, Tls: opts.TLS.proto(), Trace: opts.Trace.proto(), Icmp: opts.ICMP.proto()}
	if opts.Timeout != 0 {
		req.Timeout = durationpb.New(opts.Timeout)
	}
	resp, err := c.probe.Connect(ctx, req)
	if err != nil {
		return nil, err
	}
	r := newConnectResult(resp)
	if pe := newProbeError(resp.GetError()); pe != nil {
		pe.Connect, pe.Path = r, r.Path
		return r, pe
	}
	return r, nil
}

func newConnectResult(resp *netprobev1.ConnectResponse) *ConnectResult {
	r := &ConnectResult{
		LocalAddr:       parseAddrPort(resp.GetLocalAddress()),
		RemoteAddr:      parseAddrPort(resp.GetPeerAddress()),
		Port:            uint16(resp.GetPort()),
		ResolveDuration: resp.GetResolveDuration().AsDuration(),
		ConnectDuration: resp.GetConnectDuration().AsDuration(),
		TotalDuration:   resp.GetTotalDuration().AsDuration(),
		TLS:             newTLSResult(resp.GetTls()),
		TCPInfo:         newTCPInfo(resp.GetTcpInfo()),
		Path:            newPath(resp.GetPath()),
		ICMP:            newICMPResult(resp.GetIcmp()),
		proto:           resp,
	}
	for _, a := range resp.GetResolvedAddresses() {
		if ip, err := netip.ParseAddr(a); err == nil {
			r.Resolved = append(r.Resolved, ip)
		}
	}
	for _, a := range resp.GetAttempts() {
		r.Attempts = append(r.Attempts, Attempt{
			Addr:      parseAddrPort(a.GetAddress()),
			Start:     a.GetStart().AsDuration(),
			Duration:  a.GetDuration().AsDuration(),
			Err:       newProbeError(a.GetError()),
			Abandoned: a.GetAbandoned(),
		})
	}
	if rl := resp.GetReverseLookup(); rl != nil {
		r.ReverseLookup = &ReverseLookup{
			Names:    rl.GetNames(),
			Duration: rl.GetDuration().AsDuration(),
			Err:      newProbeError(rl.GetError()),
		}
	}
	return r
}

// sourceAddress is a source address for a Target: "" for none.
func sourceAddress(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// parseAddrPort parses the server's "ip:port"; the zero value when empty.
func parseAddrPort(s string) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(s)
	return ap
}
