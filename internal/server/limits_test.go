package server

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
// one attacker with many source addresses would: a caller that has spent
// its burst stays limited however many others come, while the buckets of
// callers that have filled up again are the ones forgotten.
func TestRateLimiterTable(t *testing.T) {
	r := newRateLimiter("rate", 1e-9, 2, newMetrics(prometheus.NewRegistry()))
	r.maxCallers = 100
	victim := from("192.0.2.1")
	for range 2 {
		if err := r.Limit(victim); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 {
		// Each attacker address spends its own burst, so that no bucket
		// is full.
		ctx := from(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String())
		r.Limit(ctx)
		r.Limit(ctx)
	}
	if err := r.Limit(victim); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("the victim after 1,000 other callers: %v, want still over its rate", err)
	}
	if len(r.callers) > r.maxCallers {
		t.Errorf("%d buckets kept, want at most %d", len(r.callers), r.maxCallers)
	}

	// Full buckets are the same as new ones: those are forgotten to make
	// room, and their callers lose nothing.
	idle := newRateLimiter("rate", 1e9, 2, newMetrics(prometheus.NewRegistry()))
	idle.maxCallers = 100
	for i := range 1000 {
		ctx := from(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String())
		if err := idle.Limit(ctx); err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if len(idle.callers) > idle.maxCallers {
		t.Errorf("%d buckets kept, want at most %d", len(idle.callers), idle.maxCallers)
	}
}

// TestCallerOf checks whom the limits count: IPv6 peers by /64, since a
// host has a whole /64 to pick its addresses from.
func TestCallerOf(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
	} {
		if callerOf(from(tc.a)) != callerOf(from(tc.b)) {
			t.Errorf("%s and %s are different callers, want one", tc.a, tc.b)
		}
	}
	if callerOf(from("2001:db8:1:2::1")) == callerOf(from("2001:db8:1:3::1")) {
		t.Error("two /64s are one caller, want two")
	}
	if got := callerOf(from("2001:db8:1:2::1")).String(); got != "peer 2001:db8:1:2::/64" {
		t.Errorf("String = %q", got)
	}
}
