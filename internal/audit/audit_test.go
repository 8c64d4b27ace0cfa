package audit

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/peer"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/service"
)

// TestRecent keeps the newest probes, newest first, and forgets the rest.
func TestRecent(t *testing.T) {
	a := New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	a.size = 3
	for port := range uint32(5) {
		a.Observe(context.Background(), service.Report{Method: "Connect", Target: &netprobev1.Target{Host: "h", Port: port + 1}})
	}
	var got []string
	for _, p := range a.Recent() {
		got = append(got, p.Target)
	}
	if strings.Join(got, ",") != "tcp h:5,tcp h:4,tcp h:3" {
		t.Errorf("kept %q", got)
	}
	if a.Lookup(2) != nil || a.Lookup(5) == nil {
		t.Error("Lookup finds a forgotten probe, or not a kept one")
	}
}

// TestObserve writes one audit line a probe, naming its caller, and says
// where it came in.
func TestObserve(t *testing.T) {
	var log bytes.Buffer
	a := New(slog.New(slog.NewTextHandler(&log, nil)), prometheus.NewRegistry(), []string{"built-in: link-local"})
	ctx := WithVia(service.WithCaller(context.Background(), "alice"), "/probe tcp_connect")
	a.Observe(ctx, service.Report{Method: "Connect", Target: &netprobev1.Target{Host: "192.0.2.1", Port: 22},
		Error: &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED"}})
	for _, want := range []string{"msg=probe", "method=Connect", "caller=alice", `target="tcp 192.0.2.1:22"`, "outcome=failed", "stage=STAGE_CONNECT", "reason=REASON_REFUSED", "errno=ECONNREFUSED"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the audit line lacks %s:\n%s", want, log.String())
		}
	}
	if p := a.Recent()[0]; p.Via != "/probe tcp_connect" || p.Caller != "alice" || p.Stage != "CONNECT" || p.Reason != "REFUSED" {
		t.Errorf("recent probe %+v", p)
	}
}

// TestCallerNamed names a probe's caller as authentication named it, or an
// anonymous one by its address.
func TestCallerNamed(t *testing.T) {
	from := &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv6loopback, Port: 4242}}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"a token's name", peer.NewContext(service.WithCaller(context.Background(), "alice"), from), "alice"},
		{"anonymous, from its peer", peer.NewContext(context.Background(), from), "anonymous from [::1]:4242"},
		{"anonymous, no peer", context.Background(), "anonymous"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
			a.Observe(tc.ctx, service.Report{Method: "Connect", Target: &netprobev1.Target{Host: "h", Port: 1}})
			if got := a.Recent()[0].Caller; got != tc.want {
				t.Errorf("caller %q, want %q", got, tc.want)
			}
		})
	}
}

// TestTargetText names each network's target as the page and the audit
// lines show it: an ICMP echo's has no port.
func TestTargetText(t *testing.T) {
	for _, tc := range []struct {
		target *netprobev1.Target
		want   string
	}{
		{&netprobev1.Target{Host: "h", Port: 80}, "tcp h:80"},
		{&netprobev1.Target{Host: "::1", Service: "domain", Network: netprobev1.Network_NETWORK_UDP}, "udp [::1]:domain"},
		{&netprobev1.Target{Host: "192.0.2.1", Network: netprobev1.Network_NETWORK_ICMP}, "icmp 192.0.2.1"},
	} {
		if got := targetText(tc.target); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.target, got, tc.want)
		}
	}
}
