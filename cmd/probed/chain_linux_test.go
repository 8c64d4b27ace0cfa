package main

import (
	"net/netip"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/netlab"
)

// chainFamily is one address family of a netlab chain: its client's,
// target's and routers' addresses, and the ICMP types and codes, and the
// reasons, of what its routers and target answer.
type chainFamily struct {
	name           string
	client, target netip.Addr
	routers        []netip.Addr
	// ICMP types.
	timeExceeded, unreachable uint32
	// ICMP codes of an unreachable.
	prohibited, noRoute, portUnreachable uint32
	// Linux makes IPv4's administratively prohibited EHOSTUNREACH, IPv6's
	// EACCES.
	prohibitedReason netprobev1.Reason
	prohibitedErrno  string
}

// chainFamilies are c's two families.
func chainFamilies(c *netlab.Chain) (v4, v6 chainFamily) {
	v4 = chainFamily{
		name: "IPv4", client: c.Client.V4, target: c.Target.V4,
		timeExceeded: 11, unreachable: 3, prohibited: 13, noRoute: 0, portUnreachable: 3,
		prohibitedReason: netprobev1.Reason_REASON_HOST_UNREACHABLE, prohibitedErrno: "EHOSTUNREACH",
	}
	v6 = chainFamily{
		name: "IPv6", client: c.Client.V6, target: c.Target.V6,
		timeExceeded: 3, unreachable: 1, prohibited: 1, noRoute: 0, portUnreachable: 4,
		prohibitedReason: netprobev1.Reason_REASON_PROHIBITED, prohibitedErrno: "EACCES",
	}
	for _, r := range c.Routers {
		v4.routers = append(v4.routers, r.V4)
		v6.routers = append(v6.routers, r.V6)
	}
	return v4, v6
}
