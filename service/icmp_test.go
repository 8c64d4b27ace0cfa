package service_test

import (
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestICMPLoopback sends echoes to loopback, in-process: from whichever
// socket this process may have (a datagram socket where
// ping_group_range allows its group, else a raw one, as root). The
// replies across routers, the errors that come back, and the unprivileged
// datagram socket are cmd/probed's TestICMP, across namespaces.
func TestICMPLoopback(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("ICMP echo is sent on Linux only")
	}
	e := probetest.Start(t)
	ttl := func(n uint32) *uint32 { return &n }
	for _, tc := range []struct {
		name    string
		host    string
		family  netprobev1.IpFamily
		opts    *netprobev1.IcmpOptions
		payload uint32
	}{
		{"IPv4", "127.0.0.1", 0, nil, 56},
		{"IPv6", "::1", 0, nil, 56},
		{"a name, IPv4 asked for", "localhost", netprobev1.IpFamily_IP_FAMILY_IPV4, nil, 56},
		// The cap, unfragmented: loopback's MTU is 64 KiB.
		{"the largest payload, don't fragment", "127.0.0.1", 0, &netprobev1.IcmpOptions{PayloadBytes: 8972, DontFragment: true}, 8972},
		{"IPv6, the largest payload, don't fragment", "::1", 0, &netprobev1.IcmpOptions{PayloadBytes: 8972, DontFragment: true}, 8972},
		{"one byte, TTL 1", "127.0.0.1", 0, &netprobev1.IcmpOptions{PayloadBytes: 1, Ttl: ttl(1)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
				Target: &netprobev1.Target{Host: tc.host, Network: netprobev1.Network_NETWORK_ICMP, IpFamily: tc.family},
				Icmp:   tc.opts,
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Error != nil {
				t.Fatalf("error %v", resp.Error)
			}
			r := resp.GetIcmp()
			want := resp.GetResolvedAddresses()[0]
			if r.GetReplyAddress() != want || resp.GetPeerAddress() != want || resp.GetLocalAddress() != want {
				t.Errorf("reply from %q, peer %q, local %q: want %s for each", r.GetReplyAddress(), resp.GetPeerAddress(), resp.GetLocalAddress(), want)
			}
			if r.GetRtt().AsDuration() <= 0 || r.GetSetupDuration().AsDuration() <= 0 {
				t.Errorf("rtt %v, setup %v: want both positive", r.GetRtt().AsDuration(), r.GetSetupDuration().AsDuration())
			}
			// Loopback's replies come straight back, with the system's TTL.
			if r.GetReplyTtl() != 64 || r.GetPayloadBytes() != tc.payload || r.GetSocket() == netprobev1.IcmpSocket_ICMP_SOCKET_UNSPECIFIED {
				t.Errorf("result %v, want reply TTL 64, %d bytes and a socket", r, tc.payload)
			}
		})
	}
}

// TestICMPPolicy checks that an echo is held to the target policy as a
// connection is: a denied address gets no packet, and the call is
// PERMISSION_DENIED naming the rule; in a Sweep, the entry's result.
func TestICMPPolicy(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.WithPolicy("deny 127.0.0.1"))
	icmp := &netprobev1.Target{Host: "127.0.0.1", Network: netprobev1.Network_NETWORK_ICMP}
	_, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: icmp})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("%v, want PERMISSION_DENIED", err)
	}
	stream, err := e.Probe.Sweep(probetest.Context(t), &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{{Target: icmp}}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if pe := resp.GetConnect().GetError(); pe.GetStage() != netprobev1.Stage_STAGE_POLICY || pe.GetRule() != "127.0.0.1" || pe.GetMessage() != "127.0.0.1 is denied by the target policy: 127.0.0.1" || resp.GetConnect().GetIcmp() != nil {
		t.Errorf("result %v, want STAGE_POLICY by rule 127.0.0.1, and no echo", resp)
	}
}

// TestICMPSweep runs echoes as a Sweep's entries, one of them expanded to
// each address of its name, through the code path Connect's take.
func TestICMPSweep(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("ICMP echo is sent on Linux only")
	}
	e := probetest.Start(t)
	opts := &netprobev1.IcmpOptions{PayloadBytes: 100}
	stream, err := e.Probe.Sweep(probetest.Context(t), &netprobev1.SweepRequest{
		Timeout: durationpb.New(5 * time.Second),
		Targets: []*netprobev1.SweepTarget{
			{Target: &netprobev1.Target{Host: "127.0.0.1", Network: netprobev1.Network_NETWORK_ICMP}, Icmp: opts},
			{Target: &netprobev1.Target{Host: "::1", Network: netprobev1.Network_NETWORK_ICMP}, Icmp: opts},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	replies := map[string]bool{}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		r := resp.GetConnect().GetIcmp()
		if resp.GetConnect().GetError() != nil || r.GetPayloadBytes() != 100 || r.GetReplyAddress() != resp.GetTarget().GetHost() {
			t.Errorf("result %v, want a reply of 100 bytes from the target", resp)
		}
		if !proto.Equal(resp.GetTarget(), &netprobev1.Target{Host: resp.GetTarget().GetHost(), Network: netprobev1.Network_NETWORK_ICMP}) {
			t.Errorf("target %v, want the ICMP target, no port", resp.GetTarget())
		}
		replies[r.GetReplyAddress()] = true
	}
	if len(replies) != 2 {
		t.Errorf("replies from %v, want 127.0.0.1 and ::1", replies)
	}
}

// TestICMPBadRequests plays a caller who asks for echoes the server must
// not send: oversized, out of range, with a port, with what only TCP has,
// or ICMP options on another network. Each is INVALID_ARGUMENT naming the
// field, and no echo leaves: a raw socket on the address they all name
// sees the first echo request come from the good request sent after
// them.
func TestICMPBadRequests(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("ICMP echo is sent on Linux only")
	}
	const host = "127.0.0.77"
	sniff, err := net.ListenPacket("ip4:icmp", host)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: CI=true forbids skipping", err)
		}
		t.Skipf("watching for echoes needs a raw socket: %v", err)
	}
	defer sniff.Close()
	e := probetest.Start(t)
	icmpTarget := func() *netprobev1.Target {
		return &netprobev1.Target{Host: host, Network: netprobev1.Network_NETWORK_ICMP}
	}
	with := func(f func(*netprobev1.Target)) *netprobev1.Target {
		t := icmpTarget()
		f(t)
		return t
	}
	ttl := func(n uint32) *uint32 { return &n }
	connects := []struct {
		name   string
		req    *netprobev1.ConnectRequest
		fields []string
		// message, when set, is the refusal's whole message.
		message string
	}{
		{"payload of 65,000 bytes", &netprobev1.ConnectRequest{Target: icmpTarget(), Icmp: &netprobev1.IcmpOptions{PayloadBytes: 65000}}, []string{"icmp.payload_bytes"}, "icmp.payload_bytes: 65000 bytes is over the cap of 8972"},
		{"payload a byte over the cap", &netprobev1.ConnectRequest{Target: icmpTarget(), Icmp: &netprobev1.IcmpOptions{PayloadBytes: 8973}}, []string{"icmp.payload_bytes"}, ""},
		{"payload of 2^32-1 bytes", &netprobev1.ConnectRequest{Target: icmpTarget(), Icmp: &netprobev1.IcmpOptions{PayloadBytes: math.MaxUint32}}, []string{"icmp.payload_bytes"}, ""},
		{"TTL 0", &netprobev1.ConnectRequest{Target: icmpTarget(), Icmp: &netprobev1.IcmpOptions{Ttl: ttl(0)}}, []string{"icmp.ttl"}, "icmp.ttl: 0 is out of range 1-255"},
		{"TTL 256", &netprobev1.ConnectRequest{Target: icmpTarget(), Icmp: &netprobev1.IcmpOptions{Ttl: ttl(256)}}, []string{"icmp.ttl"}, "icmp.ttl: 256 is out of range 1-255"},
		{"TTL 2^32-1", &netprobev1.ConnectRequest{Target: icmpTarget(), Icmp: &netprobev1.IcmpOptions{Ttl: ttl(math.MaxUint32)}}, []string{"icmp.ttl"}, ""},
		{"a port", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Port = 80 })}, []string{"target.port"}, "target.port: an ICMP echo has no port"},
		{"a port out of range", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Port = 70000 })}, []string{"target.port"}, ""},
		{"a service", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Service = "http" })}, []string{"target.service"}, ""},
		{"TLS", &netprobev1.ConnectRequest{Target: icmpTarget(), Tls: &netprobev1.TlsOptions{}}, []string{"tls"}, "tls: an ICMP echo has no TLS handshake"},
		{"a trace", &netprobev1.ConnectRequest{Target: icmpTarget(), Trace: &netprobev1.TraceOptions{}}, []string{"trace"}, ""},
		{"ICMP options on TCP", &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: host, Port: 80}, Icmp: &netprobev1.IcmpOptions{}}, []string{"icmp"}, ""},
		{"every limit at once", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Port = 1 }), Icmp: &netprobev1.IcmpOptions{PayloadBytes: 1 << 20, Ttl: ttl(1000)}}, []string{"target.port", "icmp.payload_bytes", "icmp.ttl"}, ""},
	}
	for _, tt := range connects {
		t.Run("Connect/"+tt.name, func(t *testing.T) {
			_, err := e.Probe.Connect(probetest.Context(t), tt.req)
			if diff := cmp.Diff(tt.fields, badRequestFields(t, err)); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
			if got := status.Convert(err).Message(); tt.message != "" && got != "invalid request: "+tt.message {
				t.Errorf("message %q, want invalid request: %s", got, tt.message)
			}
		})
	}
	sweeps := []struct {
		name   string
		entry  *netprobev1.SweepTarget
		fields []string
	}{
		{"payload over the cap", &netprobev1.SweepTarget{Target: icmpTarget(), Icmp: &netprobev1.IcmpOptions{PayloadBytes: 65000}}, []string{"targets[0].icmp.payload_bytes"}},
		{"steps", &netprobev1.SweepTarget{Target: icmpTarget(), Steps: []*netprobev1.Step{{Action: &netprobev1.Step_Expect{Expect: "x"}}}}, []string{"targets[0].steps"}},
		{"TLS", &netprobev1.SweepTarget{Target: icmpTarget(), Tls: &netprobev1.TlsOptions{}}, []string{"targets[0].tls"}},
		{"an SRV name", &netprobev1.SweepTarget{Target: icmpTarget(), Expand: netprobev1.Expand_EXPAND_SRV}, []string{"targets[0].expand"}},
	}
	for _, tt := range sweeps {
		t.Run("Sweep/"+tt.name, func(t *testing.T) {
			stream, err := e.Probe.Sweep(probetest.Context(t), &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{tt.entry}})
			if err == nil {
				_, err = stream.Recv()
			}
			if diff := cmp.Diff(tt.fields, badRequestFields(t, err)); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("Fetch", func(t *testing.T) {
		stream, err := e.Probe.Fetch(probetest.Context(t), &netprobev1.FetchRequest{Target: icmpTarget()})
		if err == nil {
			_, err = stream.Recv()
		}
		if diff := cmp.Diff([]string{"target.network"}, badRequestFields(t, err)); diff != "" {
			t.Errorf("fields (-want +got):\n%s", diff)
		}
	})

	// The good request: its echo must be the first the address sees.
	resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: icmpTarget()})
	if err != nil || resp.GetError() != nil {
		t.Fatalf("%v, %v: want the good echo answered", err, resp.GetError())
	}
	sniff.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := sniff.ReadFrom(buf)
		if err != nil {
			t.Fatalf("the good echo was not seen: %v", err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEcho {
			continue
		}
		if seq := m.Body.(*icmp.Echo).Seq; seq != int(resp.GetIcmp().GetSequence()) {
			t.Fatalf("an echo request of sequence %d came before the good one's %d: a refused request sent it", seq, resp.GetIcmp().GetSequence())
		}
		return
	}
}
