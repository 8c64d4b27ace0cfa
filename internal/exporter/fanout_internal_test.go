package exporter

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
)

// TestSweepEntryOfAnEcho sends an icmp module to a fleet's nodes as it
// runs here: a Sweep entry of the echo's target, without a port, and
// every option of its icmp section, which the nodes would otherwise send
// with their defaults.
func TestSweepEntryOfAnEcho(t *testing.T) {
	set, _, err := modules.Parse([]byte("modules:\n  ping:\n    prober: icmp\n    icmp:\n      preferred_ip_protocol: ip4\n      payload_size: 1400\n      dont_fragment: true\n      ttl: 5\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	m := set.Modules["ping"]
	if why := unsweepable(m); why != "" {
		t.Fatalf("unsweepable: %s", why)
	}
	ttl := uint32(5)
	want := &netprobev1.SweepTarget{
		Target:  &netprobev1.Target{Host: "db.test", Network: netprobev1.Network_NETWORK_ICMP, IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV4},
		Timeout: durationpb.New(2 * time.Second),
		Icmp:    &netprobev1.IcmpOptions{PayloadBytes: 1400, DontFragment: true, Ttl: &ttl},
	}
	got := sweepEntry(m, &netprobev1.Target{Host: "db.test"}, 2*time.Second)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("entry (-want +got):\n%s", diff)
	}
}

// TestSweepEntryOfATrace sends a module's trace to a fleet's nodes with
// its Sweep entry, the trace's time as the module's request has it: each
// node's probe is traced as this node's would be.
func TestSweepEntryOfATrace(t *testing.T) {
	set, _, err := modules.Parse([]byte("modules:\n  traced:\n    prober: tcp\n    netprobe:\n      trace: {when: always, max_hops: 9}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	m := set.Modules["traced"]
	if why := unsweepable(m); why != "" {
		t.Fatalf("unsweepable: %s", why)
	}
	target := &netprobev1.Target{Host: "db.test", Port: 5432}
	connect, _ := m.Request(target, 4*time.Second)
	got := sweepEntry(m, target, 4*time.Second)
	if connect.GetTrace() == nil || got.GetTrace().GetMaxHops() != 9 || !proto.Equal(got.GetTrace(), connect.GetTrace()) {
		t.Errorf("entry's trace %v, want the request's %v", got.GetTrace(), connect.GetTrace())
	}
}
