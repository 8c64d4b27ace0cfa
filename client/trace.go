package client

import (
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// TraceOptions asks Connect to trace the network path to the address it
// reached, or failed to reach, hop by hop as traceroute does: TCP SYNs
// (for a UDP target, datagrams of two bytes, as traceroute -U sends) with a TTL
// (IPv6 hop limit) of 1, 2, 3 and so on, every one from the same local
// port (Paris traceroute). The trace runs after the probe, on a budget of
// its own. TCP and UDP targets are traced; the probe server must
// run on Linux (elsewhere the Path ends PathEndUnsupported, with no hops).
// The zero value traces a probe that failed, with the server's defaults.
type TraceOptions struct {
	// Always traces every probe that had an address; without it only a
	// probe that failed on the way to its target or at it (StageConnect,
	// StageTLSHandshake) is traced.
	Always bool
	// MaxHops is the highest TTL tried, 1 to 64; zero is 30.
	MaxHops int
	// ProbesPerHop is how many probes each TTL is sent, 1 to 10; zero is
	// 1. More give each hop's loss, as mtr does. A probe not answered
	// within 1s is lost.
	ProbesPerHop int
	// Timeout bounds the trace, apart from the probe's own timeout; zero
	// is the server's default (10s, or its maximum timeout if less). The
	// ctx given to Connect must leave time for the probe and the trace:
	// the trace ends a margin before ctx's deadline, with what it found.
	Timeout time.Duration
	// Names looks up the name of each hop that answered (PTR), as
	// traceroute does without -n, within the trace's Timeout: Hop.Name.
	Names bool
}

func (o *TraceOptions) proto() *netprobev1.TraceOptions {
	if o == nil {
		return nil
	}
	p := &netprobev1.TraceOptions{
		When:         netprobev1.TraceWhen_TRACE_WHEN_ON_FAILURE,
		MaxHops:      clampUint32(o.MaxHops),
		ProbesPerHop: clampUint32(o.ProbesPerHop),
		Names:        o.Names,
	}
	if o.Always {
		p.When = netprobev1.TraceWhen_TRACE_WHEN_ALWAYS
	}
	if o.Timeout != 0 {
		p.Timeout = durationpb.New(o.Timeout)
	}
	return p
}

// clampUint32 is n as a uint32 field: a negative n, out of range, is sent
// as the largest value so that the server refuses it rather than take it
// for the default.
func clampUint32(n int) uint32 {
	if n < 0 || uint64(n) > uint64(^uint32(0)) {
		return ^uint32(0)
	}
	return uint32(n)
}

// PathEnd says why a trace stopped where it did.
type PathEnd = netprobev1.PathEnd

// The ends of a trace; see the proto for each one's meaning.
const (
	PathEndReached        = netprobev1.PathEnd_PATH_END_REACHED
	PathEndUnreachable    = netprobev1.PathEnd_PATH_END_UNREACHABLE
	PathEndSilence        = netprobev1.PathEnd_PATH_END_SILENCE
	PathEndMaxHops        = netprobev1.PathEnd_PATH_END_MAX_HOPS
	PathEndTimeout        = netprobev1.PathEnd_PATH_END_TIMEOUT
	PathEndServerShutdown = netprobev1.PathEnd_PATH_END_SERVER_SHUTDOWN
	PathEndError          = netprobev1.PathEnd_PATH_END_ERROR
	PathEndUnsupported    = netprobev1.PathEnd_PATH_END_UNSUPPORTED
)

// HopAnswer is what answered the probes of one TTL.
type HopAnswer = netprobev1.HopAnswer

// The answers a hop can have; see the proto for each one's meaning.
const (
	HopAnswerNone         = netprobev1.HopAnswer_HOP_ANSWER_NONE
	HopAnswerTimeExceeded = netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED
	HopAnswerUnreachable  = netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE
	HopAnswerSYNACK       = netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK
	HopAnswerRST          = netprobev1.HopAnswer_HOP_ANSWER_RST
	// HopAnswerPortUnreachable is a UDP target's ICMP port unreachable:
	// reached, with nothing on the port.
	HopAnswerPortUnreachable = netprobev1.HopAnswer_HOP_ANSWER_PORT_UNREACHABLE
	// HopAnswerDatagram is a UDP target's reply datagram.
	HopAnswerDatagram = netprobev1.HopAnswer_HOP_ANSWER_DATAGRAM
)

// Path is the network path a trace found to a target's address.
type Path struct {
	// Destination is the address traced; Source the local end of the
	// trace's flow (not the probe's own connection's).
	Destination, Source netip.AddrPort
	// Hops are the TTLs tried, in order from 1.
	Hops []Hop
	// Reached is true when the target answered (End is PathEndReached).
	Reached bool
	// FlowHeld is true when every probe went out on the same addresses
	// and ports, so that routers balancing by flow sent them all one way;
	// false when hops may belong to different paths.
	FlowHeld bool
	// End says why the trace stopped where it did.
	End PathEnd
	// Duration is how long the trace took, of its Timeout.
	Duration, Timeout time.Duration
	// Err is the local failure that ended the trace (PathEndError), or
	// what the server's system lacks for one (PathEndUnsupported); nil
	// otherwise.
	Err *ProbeError
}

// Hop is one TTL of a trace.
type Hop struct {
	// TTL is the TTL (IPv6 hop limit) the hop's probes were sent with.
	TTL int
	// Addr is the address that answered (the first one's, when several
	// did); the zero Addr when none did.
	Addr netip.Addr
	// Answer is what answered.
	Answer HopAnswer
	// ICMPType and ICMPCode are the ICMP (ICMPv6) type and code of a
	// HopAnswerTimeExceeded, HopAnswerUnreachable or
	// HopAnswerPortUnreachable.
	ICMPType, ICMPCode int
	// Reason and Errno are what a HopAnswerUnreachable, HopAnswerRST or
	// HopAnswerPortUnreachable makes of the connection, as a ProbeError would say it.
	Reason Reason
	Errno  string
	// RTTs are the round-trip times of the probes answered, in the order
	// they were sent.
	RTTs []time.Duration
	// Sent is how many probes went out with this TTL, Answered how many
	// of them were answered.
	Sent, Answered int
	// Name is the name the reverse lookup of Addr found, when
	// TraceOptions.Names asked for it; "" when none was found in time. It
	// is what the server's resolver said: print it through Printable.
	Name string
}

// Lost is how many of the hop's probes went unanswered.
func (h Hop) Lost() int { return h.Sent - h.Answered }

// LastAnswered returns the last hop that answered at all, and false when
// none did.
func (p *Path) LastAnswered() (Hop, bool) {
	for i := len(p.Hops) - 1; i >= 0; i-- {
		if p.Hops[i].Answer != HopAnswerNone {
			return p.Hops[i], true
		}
	}
	return Hop{}, false
}

func newPath(p *netprobev1.Path) *Path {
	if p == nil {
		return nil
	}
	path := &Path{
		Destination: parseAddrPort(p.GetDestination()),
		Source:      parseAddrPort(p.GetSource()),
		Reached:     p.GetReached(),
		FlowHeld:    p.GetFlowHeld(),
		End:         p.GetEnd(),
		Duration:    p.GetDuration().AsDuration(),
		Timeout:     p.GetTimeout().AsDuration(),
		Err:         newProbeError(p.GetError()),
	}
	for _, h := range p.GetHops() {
		addr, _ := netip.ParseAddr(h.GetAddress())
		hop := Hop{
			TTL: int(h.GetTtl()), Addr: addr, Answer: h.GetAnswer(),
			ICMPType: int(h.GetIcmpType()), ICMPCode: int(h.GetIcmpCode()),
			Reason: h.GetReason(), Errno: h.GetErrno(),
			Sent: int(h.GetSent()), Answered: int(h.GetAnswered()),
			Name: h.GetName(),
		}
		for _, d := range h.GetRtts() {
			hop.RTTs = append(hop.RTTs, d.AsDuration())
		}
		path.Hops = append(path.Hops, hop)
	}
	return path
}
