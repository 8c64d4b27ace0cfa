package service_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// blackhole returns the port of a probetest.Blackhole on ip for the length
// of the test.
func blackhole(t *testing.T, ip string) uint32 {
	t.Helper()
	port, closeFn, err := probetest.Blackhole(netip.MustParseAddr(ip))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	return uint32(port)
}

// wantError is what a test expects of a ProbeError; nil means success.
type wantError struct {
	stage   netprobev1.Stage
	reason  netprobev1.Reason
	errno   string
	address string // checked when not empty
}

func checkError(t *testing.T, got *netprobev1.ProbeError, want *wantError) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Fatalf("unexpected error: %v", got)
		}
		return
	}
	if got == nil {
		t.Fatalf("no error, want %v / %v", want.stage, want.reason)
	}
	if got.Stage != want.stage || got.Reason != want.reason || got.Errno != want.errno {
		t.Errorf("error = %v / %v / %q, want %v / %v / %q (message %q)", got.Stage, got.Reason, got.Errno, want.stage, want.reason, want.errno, got.Message)
	}
	if want.address != "" && got.Address != want.address {
		t.Errorf("error address = %q, want %q", got.Address, want.address)
	}
	if got.Message == "" || got.Elapsed == nil {
		t.Errorf("error lacks message or elapsed: %v", got)
	}
}

func TestConnect(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	v4 := probetest.Listen(t, "127.0.0.1:0", nil)
	v6 := probetest.Listen(t, "[::1]:0", nil)
	// Same port on both families, listening only on IPv4.
	onlyV4 := probetest.Listen(t, "127.0.0.1:0", nil)
	refused := probetest.ClosedPort(t, "tcp4", "127.0.0.1:0")
	hole := blackhole(t, "127.0.0.1")

	loop4, loop6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	e.DNS.SetAddrs("dual.test", loop4, loop6)
	e.DNS.SetAddrs("v6only.test", loop6)
	e.DNS.SetRcode("servfail.test", dns.RcodeServerFailure)
	e.DNS.Drop("silent.test")

	tests := []struct {
		name   string
		target *netprobev1.Target
		// timeout is the probe's; zero leaves the server default.
		timeout time.Duration
		want    *wantError
		// peer is the peer address expected on success.
		peer string
		// attempts are the addresses tried, in order, and whether each
		// failed.
		attempts []string
	}{
		{
			name:     "IPv4 literal",
			target:   &netprobev1.Target{Host: "127.0.0.1", Port: v4.Port()},
			peer:     v4.Addr(),
			attempts: []string{v4.Addr()},
		},
		{
			name:     "IPv6 literal in brackets",
			target:   &netprobev1.Target{Host: "[::1]", Port: v6.Port()},
			peer:     v6.Addr(),
			attempts: []string{v6.Addr()},
		},
		{
			name:   "dual-stack name falls back to IPv4",
			target: &netprobev1.Target{Host: "dual.test", Port: onlyV4.Port()},
			peer:   onlyV4.Addr(),
			attempts: []string{
				fmt.Sprintf("[::1]:%d failed", onlyV4.Port()),
				fmt.Sprintf("127.0.0.1:%d", onlyV4.Port()),
			},
		},
		{
			name:     "name forced to IPv4",
			target:   &netprobev1.Target{Host: "dual.test", Port: v4.Port(), IpFamily: netprobev1.IpFamily_IP_FAMILY_IPV4},
			peer:     v4.Addr(),
			attempts: []string{v4.Addr()},
		},
		{
			name:     "IPv4 preferred: the IPv6 address is not tried",
			target:   &netprobev1.Target{Host: "dual.test", Port: refused, IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV4},
			want:     &wantError{stage: netprobev1.Stage_STAGE_CONNECT, reason: netprobev1.Reason_REASON_REFUSED, errno: "ECONNREFUSED", address: fmt.Sprintf("127.0.0.1:%d", refused)},
			attempts: []string{fmt.Sprintf("127.0.0.1:%d failed", refused)},
		},
		{
			name:     "IPv4 preferred, the name has only IPv6",
			target:   &netprobev1.Target{Host: "v6only.test", Port: v6.Port(), IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV4},
			peer:     v6.Addr(),
			attempts: []string{v6.Addr()},
		},
		{
			name:     "refused",
			target:   &netprobev1.Target{Host: "127.0.0.1", Port: refused},
			want:     &wantError{stage: netprobev1.Stage_STAGE_CONNECT, reason: netprobev1.Reason_REASON_REFUSED, errno: "ECONNREFUSED", address: fmt.Sprintf("127.0.0.1:%d", refused)},
			attempts: []string{fmt.Sprintf("127.0.0.1:%d failed", refused)},
		},
		{
			name:     "SYN dropped: connect timeout",
			target:   &netprobev1.Target{Host: "127.0.0.1", Port: hole},
			timeout:  300 * time.Millisecond,
			want:     &wantError{stage: netprobev1.Stage_STAGE_CONNECT, reason: netprobev1.Reason_REASON_TIMEOUT, address: fmt.Sprintf("127.0.0.1:%d", hole)},
			attempts: []string{fmt.Sprintf("127.0.0.1:%d failed", hole)},
		},
		{
			name:   "no such host",
			target: &netprobev1.Target{Host: "nxdomain.test", Port: 80},
			want:   &wantError{stage: netprobev1.Stage_STAGE_RESOLVE, reason: netprobev1.Reason_REASON_NO_SUCH_HOST, address: "nxdomain.test"},
		},
		{
			name:   "IPv4 forced, name has only AAAA",
			target: &netprobev1.Target{Host: "v6only.test", Port: 80, IpFamily: netprobev1.IpFamily_IP_FAMILY_IPV4},
			want:   &wantError{stage: netprobev1.Stage_STAGE_RESOLVE, reason: netprobev1.Reason_REASON_NO_SUCH_HOST, address: "v6only.test"},
		},
		{
			name:   "SERVFAIL: temporary DNS failure",
			target: &netprobev1.Target{Host: "servfail.test", Port: 80},
			want:   &wantError{stage: netprobev1.Stage_STAGE_RESOLVE, reason: netprobev1.Reason_REASON_TEMPORARY_DNS_FAILURE, address: "servfail.test"},
		},
		{
			name:    "DNS server silent: resolve timeout",
			target:  &netprobev1.Target{Host: "silent.test", Port: 80},
			timeout: 300 * time.Millisecond,
			want:    &wantError{stage: netprobev1.Stage_STAGE_RESOLVE, reason: netprobev1.Reason_REASON_TIMEOUT, address: "silent.test"},
		},
		{
			name:   "unknown service",
			target: &netprobev1.Target{Host: "127.0.0.1", Service: "no-such-service"},
			want:   &wantError{stage: netprobev1.Stage_STAGE_SERVICE_LOOKUP, reason: netprobev1.Reason_REASON_UNKNOWN_SERVICE, address: "no-such-service"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := &netprobev1.ConnectRequest{Target: tt.target}
			if tt.timeout != 0 {
				req.Timeout = durationpb.New(tt.timeout)
			}
			start := time.Now()
			resp, err := e.Probe.Connect(probetest.Context(t), req)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			checkError(t, resp.Error, tt.want)
			if tt.timeout != 0 && tt.want != nil && tt.want.reason == netprobev1.Reason_REASON_TIMEOUT {
				if took := time.Since(start); took > tt.timeout+time.Second {
					t.Errorf("timeout of %v fired after %v", tt.timeout, took)
				}
			}
			var attempts []string
			for _, a := range resp.Attempts {
				s := a.Address
				if a.Error != nil {
					s += " failed"
				}
				attempts = append(attempts, s)
			}
			if diff := cmp.Diff(tt.attempts, attempts); diff != "" {
				t.Errorf("attempts (-want +got):\n%s", diff)
			}
			if tt.want != nil {
				if resp.LocalAddress != "" || resp.PeerAddress != "" {
					t.Errorf("failed probe reports addresses %q -> %q", resp.LocalAddress, resp.PeerAddress)
				}
				return
			}
			if resp.PeerAddress != tt.peer {
				t.Errorf("peer = %q, want %q", resp.PeerAddress, tt.peer)
			}
			if resp.TotalDuration == nil || resp.ConnectDuration == nil || resp.ResolveDuration == nil {
				t.Errorf("timings missing: %v", resp)
			}
		})
	}
}

// TestConnectAddresses checks that the reported addresses are the ones the
// target saw: our local address is its peer address.
func TestConnectAddresses(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()}})
	if err != nil || resp.Error != nil {
		t.Fatalf("Connect: %v %v", err, resp.GetError())
	}
	select {
	case c := <-tg.Accepted:
		if got, want := resp.LocalAddress, c.RemoteAddr().String(); got != want {
			t.Errorf("local address = %q, target saw %q", got, want)
		}
		if got, want := resp.PeerAddress, c.LocalAddr().String(); got != want {
			t.Errorf("peer address = %q, target is %q", got, want)
		}
	case <-time.After(probetest.Timeout):
		t.Fatal("target accepted nothing")
	}
	if resp.Port != tg.Port() || len(resp.ResolvedAddresses) != 1 || resp.ResolvedAddresses[0] != "127.0.0.1" {
		t.Errorf("port %d, resolved %v", resp.Port, resp.ResolvedAddresses)
	}
}

func TestConnectServiceName(t *testing.T) {
	t.Parallel()
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	e := probetest.Start(t, probetest.WithServices(t, fmt.Sprintf("np-test %d/tcp np-alias\n", tg.Port())))
	resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "127.0.0.1", Service: "np-alias"}})
	if err != nil || resp.Error != nil {
		t.Fatalf("Connect: %v %v", err, resp.GetError())
	}
	if resp.Port != tg.Port() || resp.PeerAddress != tg.Addr() {
		t.Errorf("port %d peer %q, want %d %q", resp.Port, resp.PeerAddress, tg.Port(), tg.Addr())
	}
}

func TestConnectReverseLookup(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	// 127.0.0.2 and .3 are loopback too, and in no hosts file, so the
	// answers come from the test's DNS server.
	named := probetest.Listen(t, "127.0.0.2:0", nil)
	unnamed := probetest.Listen(t, "127.0.0.3:0", nil)
	e.DNS.SetPTR(netip.MustParseAddr("127.0.0.2"), "target.test")

	resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
		Target: &netprobev1.Target{Host: "127.0.0.2", Port: named.Port()}, ReverseLookup: true})
	if err != nil || resp.Error != nil {
		t.Fatalf("Connect: %v %v", err, resp.GetError())
	}
	if got := resp.ReverseLookup.GetNames(); len(got) != 1 || got[0] != "target.test." || resp.ReverseLookup.Error != nil {
		t.Errorf("reverse lookup = %v", resp.ReverseLookup)
	}

	resp, err = e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
		Target: &netprobev1.Target{Host: "127.0.0.3", Port: unnamed.Port()}, ReverseLookup: true})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	// The probe itself succeeded; only the reverse lookup failed.
	checkError(t, resp.Error, nil)
	checkError(t, resp.ReverseLookup.GetError(), &wantError{stage: netprobev1.Stage_STAGE_REVERSE_LOOKUP, reason: netprobev1.Reason_REASON_NO_SUCH_HOST, address: "127.0.0.3"})
}

// TestConnectCallerDeadline checks that the caller's deadline wins over a
// longer probe timeout, and is reported as the call's status, not a result.
func TestConnectCallerDeadline(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	hole := blackhole(t, "127.0.0.1")
	ctx, cancel := context.WithTimeout(probetest.Context(t), 300*time.Millisecond)
	defer cancel()
	_, err := e.Probe.Connect(ctx, &netprobev1.ConnectRequest{
		Target: &netprobev1.Target{Host: "127.0.0.1", Port: hole}, Timeout: durationpb.New(5 * time.Second)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Connect = %v, want DEADLINE_EXCEEDED", err)
	}
	var st interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &st) {
		t.Fatalf("not a status error: %v", err)
	}
}

// TestConnectHappyEyeballs: the IPv6 address (tried first) drops SYNs, so
// after the fallback delay IPv4 is tried, connects, and the IPv6 attempt is
// abandoned, not failed.
func TestConnectHappyEyeballs(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	port := blackhole(t, "::1")
	v4 := probetest.Listen(t, fmt.Sprintf("127.0.0.1:%d", port), nil)
	e.DNS.SetAddrs("eyeballs.test", netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1"))
	resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "eyeballs.test", Port: port}})
	if err != nil {
		t.Fatal(err)
	}
	checkError(t, resp.Error, nil)
	if resp.PeerAddress != v4.Addr() {
		t.Errorf("peer = %q, want %q", resp.PeerAddress, v4.Addr())
	}
	type attempt struct {
		Address   string
		Abandoned bool
		Failed    bool
	}
	var got []attempt
	for _, a := range resp.Attempts {
		got = append(got, attempt{a.Address, a.Abandoned, a.Error != nil})
	}
	want := []attempt{{fmt.Sprintf("[::1]:%d", port), true, false}, {fmt.Sprintf("127.0.0.1:%d", port), false, false}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	if start := resp.Attempts[1].Start.AsDuration(); start < 300*time.Millisecond {
		t.Errorf("IPv4 started %v in, before the 300ms fallback delay", start)
	}
}

// TestDNSErrorNamesServer checks that a DNS failure names the server the
// query went to (the configured one), not the system's.
func TestDNSErrorNamesServer(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "nosuch.test", Port: 80}})
	if err != nil {
		t.Fatal(err)
	}
	want := "lookup nosuch.test on " + e.DNS.Addr + ": no such host"
	if pe := resp.GetError(); pe.GetReason() != netprobev1.Reason_REASON_NO_SUCH_HOST || pe.GetMessage() != want {
		t.Errorf("error %v, want NO_SUCH_HOST %q", pe, want)
	}
}

// TestHostsFileFamily forces the address family a name in the hosts file
// does not have: NO_SUCH_HOST, as from DNS, not a failure of another kind.
func TestHostsFileFamily(t *testing.T) {
	t.Parallel()
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Skipf("no hosts file: %v", err)
	}
	families := map[string]map[bool]bool{} // name -> is IPv4 -> seen
	for _, line := range strings.Split(string(hosts), "\n") {
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil {
			continue
		}
		for _, name := range fields[1:] {
			if families[name] == nil {
				families[name] = map[bool]bool{}
			}
			families[name][a.Unmap().Is4()] = true
		}
	}
	var name string
	var family netprobev1.IpFamily
	for n, seen := range families {
		if len(seen) == 1 && !strings.HasSuffix(n, ".test") {
			name, family = n, netprobev1.IpFamily_IP_FAMILY_IPV6
			if seen[false] {
				family = netprobev1.IpFamily_IP_FAMILY_IPV4
			}
			break
		}
	}
	if name == "" {
		t.Skip("the hosts file has no name with addresses of one family only")
	}
	e := probetest.Start(t)
	resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: name, Port: 80, IpFamily: family}})
	if err != nil {
		t.Fatal(err)
	}
	if pe := resp.GetError(); pe.GetStage() != netprobev1.Stage_STAGE_RESOLVE || pe.GetReason() != netprobev1.Reason_REASON_NO_SUCH_HOST {
		t.Errorf("%s with %v: %v, want RESOLVE / NO_SUCH_HOST", name, family, pe)
	}
}

// TestSourceAddress binds the source address a probe asks for: one the
// server may bind and the machine has, one the server may not bind, one
// the machine does not have (the bind fails: STAGE_SOCKET).
func TestSourceAddress(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.AllowSource = []string{"127.0.0.2", "198.18.0.0/24"} }))
	peers := make(chan string, 4)
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		peers <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	})
	connect := func(source string) (*netprobev1.ConnectResponse, error) {
		target := tcpTarget(tg.Port())
		target.SourceAddress = source
		return e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: target})
	}
	resp, err := connect("127.0.0.2")
	if err != nil || resp.GetError() != nil || !strings.HasPrefix(resp.GetLocalAddress(), "127.0.0.2:") {
		t.Fatalf("from 127.0.0.2: %v, %v", resp, err)
	}
	if peer := <-peers; peer != "127.0.0.2" {
		t.Errorf("the target saw %s, want 127.0.0.2", peer)
	}
	resp, err = connect("198.18.0.99")
	if err != nil {
		t.Fatal(err)
	}
	checkError(t, resp.GetError(), &wantError{stage: netprobev1.Stage_STAGE_SOCKET, reason: netprobev1.Reason_REASON_OTHER, errno: "EADDRNOTAVAIL", address: tg.Addr()})
	for source, field := range map[string]string{"127.0.0.3": "target.source_address", "::1": "target.source_address", "not an address": "target.source_address"} {
		_, err := connect(source)
		if got := badRequestFields(t, err); fmt.Sprint(got) != fmt.Sprint([]string{field}) {
			t.Errorf("from %q: fields %v (%v), want %s", source, got, err, field)
		}
	}
	if len(peers) != 0 {
		t.Error("a refused source address reached the target")
	}
}
