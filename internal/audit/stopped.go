package audit

import (
	"fmt"
	"net/netip"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// StoppedAfter says where a probe's trace stopped, for the audit line
// and the page's failing targets: the last hop that answered, by address
// and TTL, and what came after it; "" without a trace that tried a hop.
// It is short and bounded: an address the trace parsed (anything else is
// left out), numbers and fixed words.
func StoppedAfter(path *netprobev1.Path) string {
	hops := path.GetHops()
	if len(hops) == 0 {
		return ""
	}
	var last *netprobev1.Hop
	for _, h := range hops {
		if h.GetAnswer() != netprobev1.HopAnswer_HOP_ANSWER_NONE && h.GetAnswer() != netprobev1.HopAnswer_HOP_ANSWER_UNSPECIFIED {
			last = h
		}
	}
	if last == nil {
		return fmt.Sprintf("no hop answered, of %d tried", len(hops))
	}
	where := fmt.Sprintf("hop %d", last.GetTtl())
	if a, err := netip.ParseAddr(last.GetAddress()); err == nil {
		where = fmt.Sprintf("%s (hop %d)", a.WithZone(""), last.GetTtl())
	}
	switch path.GetEnd() {
	case netprobev1.PathEnd_PATH_END_REACHED:
		return fmt.Sprintf("%s: the target answered %s", where, answerWords(last))
	case netprobev1.PathEnd_PATH_END_UNREACHABLE:
		return fmt.Sprintf("%s, which answered %s", where, answerWords(last))
	case netprobev1.PathEnd_PATH_END_SILENCE:
		return where + "; nothing beyond it"
	case netprobev1.PathEnd_PATH_END_MAX_HOPS:
		return fmt.Sprintf("%s; nothing reached the target within %d hops", where, len(hops))
	case netprobev1.PathEnd_PATH_END_TIMEOUT:
		return where + "; the trace ran out of time"
	}
	return fmt.Sprintf("%s; the trace ended %v", where, path.GetEnd())
}

// answerWords is what answered a hop, in a few words.
func answerWords(h *netprobev1.Hop) string {
	switch h.GetAnswer() {
	case netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK:
		return "SYN-ACK"
	case netprobev1.HopAnswer_HOP_ANSWER_RST:
		return "RST"
	case netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE:
		return fmt.Sprintf("unreachable (ICMP type %d, code %d)", h.GetIcmpType(), h.GetIcmpCode())
	case netprobev1.HopAnswer_HOP_ANSWER_PORT_UNREACHABLE:
		return fmt.Sprintf("port unreachable (ICMP type %d, code %d)", h.GetIcmpType(), h.GetIcmpCode())
	case netprobev1.HopAnswer_HOP_ANSWER_DATAGRAM:
		return "a datagram"
	case netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED:
		return "time exceeded"
	}
	// An answer this code does not know yet, by its name.
	return h.GetAnswer().String()
}
