package admission

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// from returns a context of an anonymous call from ip.
func from(ip string) context.Context {
	addr := net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 40000))
	return peer.NewContext(context.Background(), &peer.Peer{Addr: addr})
}

// TestRateLimiterTable fills the rate limiter's table with callers, as
// one attacker with many source addresses would, each spending part of its
// burst at a low rate: a caller that keeps calling stays limited however
// many others come, and every new caller still gets a burst of its own
// rather than sharing one with the crowd.
func TestRateLimiterTable(t *testing.T) {
	r := newRateLimiter("rate", 1e-9, 2, func(string) {})
	r.maxCallers = 100
	victim := from("192.0.2.1")
	for range 2 {
		if err := r.Limit(victim); err != nil {
			t.Fatal(err)
		}
	}
	attacker := func(i int) context.Context {
		return from(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String())
	}
	for i := range 1000 {
		// Each attacker address spends part of its burst, so that no
		// bucket is full.
		if err := r.Limit(attacker(i)); err != nil {
			t.Fatalf("attacker %d, new, was refused: %v (new callers share a bucket)", i, err)
		}
		if i%10 == 0 {
			// The victim keeps calling, and keeps being refused.
			if err := r.Limit(victim); status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("the victim after %d other callers: %v, want still over its rate", i, err)
			}
		}
	}
	if len(r.callers) > r.maxCallers || r.recent.Len() != len(r.callers) {
		t.Errorf("%d buckets kept (%d in the list), want at most %d", len(r.callers), r.recent.Len(), r.maxCallers)
	}
	// The callers forgotten were the least recent: the last attackers are
	// still limited by what they spent.
	last := attacker(999)
	if err := r.Limit(last); err != nil {
		t.Fatalf("the last attacker's second probe: %v", err)
	}
	if err := r.Limit(last); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("the last attacker's third probe: %v, want over its rate", err)
	}
}

// TestCallerOf checks whom the limits count: IPv6 peers by /64, since a
// host has a whole /64 to pick its addresses from.
func TestCallerOf(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
	} {
		if CallerOf(from(tc.a)) != CallerOf(from(tc.b)) {
			t.Errorf("%s and %s are different callers, want one", tc.a, tc.b)
		}
	}
	if CallerOf(from("2001:db8:1:2::1")) == CallerOf(from("2001:db8:1:3::1")) {
		t.Error("two /64s are one caller, want two")
	}
	if got := CallerOf(from("2001:db8:1:2::1")).String(); got != "peer 2001:db8:1:2::/64" {
		t.Errorf("String = %q", got)
	}
}
