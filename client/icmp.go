package client

import (
	"net/netip"
	"time"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// ICMPOptions shape an ICMP echo: Connect with network "icmp", "icmp4" or
// "icmp6". The zero value is ping's default echo.
type ICMPOptions struct {
	// PayloadBytes is the size of the echo's data; 0 means 56, as ping
	// sends. The server caps it (8,972 bytes).
	PayloadBytes int
	// DontFragment sends the echo unfragmented (IPv4's DF bit).
	DontFragment bool
	// TTL is the echo's TTL (IPv6 hop limit), 1 to 255; 0 means the
	// server's system default.
	TTL int
}

func (o *ICMPOptions) proto() *netprobev1.IcmpOptions {
	if o == nil {
		return nil
	}
	p := &netprobev1.IcmpOptions{PayloadBytes: uint32(o.PayloadBytes), DontFragment: o.DontFragment}
	if o.TTL != 0 {
		ttl := uint32(o.TTL)
		p.Ttl = &ttl
	}
	return p
}

// ICMPResult reports an ICMP echo: the request sent and its reply, when one
// came.
type ICMPResult struct {
	// Raw is true when the echo went out from a raw socket, false for an
	// unprivileged datagram socket.
	Raw bool
	// ID and Sequence are the echo's identifier and sequence number.
	ID, Sequence uint16
	// PayloadBytes is the size of the echo's data.
	PayloadBytes int
	// Setup is the time spent making the socket and sending the echo; RTT
	// the time from sending it to its reply (zero when none came).
	Setup, RTT time.Duration
	// ReplyAddr is where the reply came from; the zero Addr when none
	// came.
	ReplyAddr netip.Addr
	// ReplyTTL is the reply's TTL (IPv6 hop limit) as it arrived; 0 when
	// none came.
	ReplyTTL int
}

// Replied reports whether the echo was answered.
func (r *ICMPResult) Replied() bool { return r != nil && r.ReplyAddr.IsValid() }

func newICMPResult(r *netprobev1.IcmpResult) *ICMPResult {
	if r == nil {
		return nil
	}
	reply, _ := netip.ParseAddr(r.GetReplyAddress())
	return &ICMPResult{
		Raw:          r.GetSocket() == netprobev1.IcmpSocket_ICMP_SOCKET_RAW,
		ID:           uint16(r.GetId()),
		Sequence:     uint16(r.GetSequence()),
		PayloadBytes: int(r.GetPayloadBytes()),
		Setup:        r.GetSetupDuration().AsDuration(),
		RTT:          r.GetRtt().AsDuration(),
		ReplyAddr:    reply,
		ReplyTTL:     int(r.GetReplyTtl()),
	}
}
