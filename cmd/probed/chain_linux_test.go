package main

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

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

// checkPath holds path, a trace from f's client to port of its target, to
// want but for its times (the source port taken as it came, from the
// client's address), and its time to its budget; it returns path.
func checkPath(t *testing.T, f chainFamily, port uint32, want, path *netprobev1.Path) *netprobev1.Path {
	t.Helper()
	if path == nil {
		t.Fatal("no path")
	}
	want.Destination = netip.AddrPortFrom(f.target, uint16(port)).String()
	if src, err := netip.ParseAddrPort(path.Source); err != nil || src.Addr() != f.client {
		t.Errorf("path source %q, want the client's %s", path.Source, f.client)
	}
	want.Source = path.Source
	if diff := cmp.Diff(want, path, protocmp.Transform(),
		protocmp.IgnoreFields(&netprobev1.Path{}, "duration", "timeout"),
		protocmp.IgnoreFields(&netprobev1.Hop{}, "rtts")); diff != "" {
		t.Errorf("path (-want +got):\n%s", diff)
	}
	budget := path.GetTimeout().AsDuration()
	if d := path.GetDuration().AsDuration(); d <= 0 || d > budget {
		t.Errorf("the trace took %v, out of (0, %v]", d, budget)
	}
	return path
}
