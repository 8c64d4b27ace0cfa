package probecli

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPingFlags plays a user, or a script, that asks probe ping for
// echoes beyond what ping or the API allows: each is a usage error naming
// the flag, found before anything is sent. The --server is a listener
// that counts connections: not even its health check may reach it.
func TestPingFlags(t *testing.T) {
	t.Parallel()
	server := probetest.Listen(t, "127.0.0.1:0", nil)
	for _, tc := range []struct {
		name string
		args []string
		want string // stderr's first line
	}{
		{"no echoes", []string{"ping", "-c", "0", "127.0.0.1"}, "--count 0: want 1 or more (leave it out to send until interrupted)"},
		{"negative count", []string{"ping", "-c", "-1", "127.0.0.1"}, "--count -1: want 1 or more (leave it out to send until interrupted)"},
		{"negative interval", []string{"ping", "-i", "-1s", "127.0.0.1"}, "--interval -1s: want 10ms or more"},
		{"zero interval: a flood", []string{"ping", "-i", "0s", "127.0.0.1"}, "--interval 0s: want 10ms or more"},
		{"interval under the floor", []string{"ping", "-i", "9ms", "127.0.0.1"}, "--interval 9ms: want 10ms or more"},
		{"interval without a unit", []string{"ping", "-i", "1", "127.0.0.1"}, `invalid argument "1" for "-i, --interval" flag: ...`},
		{"no payload", []string{"ping", "--size", "0", "127.0.0.1"}, "--size 0: want 1 to 8972 bytes"},
		{"payload over the cap", []string{"ping", "--size", "8973", "127.0.0.1"}, "--size 8973: want 1 to 8972 bytes"},
		// 2^32+56 would be 56 as the request's uint32.
		{"payload past uint32", []string{"ping", "--size", "4294967352", "127.0.0.1"}, "--size 4294967352: want 1 to 8972 bytes"},
		{"TTL 0", []string{"ping", "-t", "0", "127.0.0.1"}, "--ttl 0: want 1 to 255"},
		{"TTL 256", []string{"ping", "-t", "256", "127.0.0.1"}, "--ttl 256: want 1 to 255"},
		{"TTL past uint32", []string{"ping", "-t", "4294967297", "127.0.0.1"}, "--ttl 4294967297: want 1 to 255"},
		{"source not an address", []string{"ping", "--source", "eth0", "127.0.0.1"}, `--source "eth0": want an IP address`},
		{"both families", []string{"ping", "-4", "-6", "127.0.0.1"}, "if any flags in the group [ipv4 ipv6] are set none of the others can be; [ipv4 ipv6] were all set"},
		{"ping's -W", []string{"ping", "-W", "1", "127.0.0.1"}, "unknown shorthand flag: 'W' in -W: the wait for each reply is --timeout"},
		{"ping's -M do", []string{"ping", "-M", "do", "127.0.0.1"}, "unknown shorthand flag: 'M' in -M: don't fragment is -D (--dont-fragment)"},
		{"a port", []string{"ping", "127.0.0.1:80"}, "127.0.0.1:80: ping takes a HOST, without a port"},
		{"a port, IPv6", []string{"ping", "[::1]:80"}, "[::1]:80: ping takes a HOST, without a port"},
		{"ping's -s for the size", []string{"ping", "-s", "100", "127.0.0.1"}, "-s 100: -s is --server, a probe server's HOST[:PORT]; ping's payload size is --size"},
		{"no host", []string{"ping"}, "..."},
		{"two hosts", []string{"ping", "127.0.0.1", "127.0.0.2"}, "..."},
	} {
		for _, mode := range []struct {
			name  string
			flags []string
		}{{"in-process", nil}, {"server", []string{"--server", server.Addr()}}} {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				r := probe(probetest.Context(t), nil, append(tc.args, mode.flags...)...)
				first, _, _ := strings.Cut(r.stderr, "\n")
				if r.code != exitUsage || !lineMatches(first, "probe: "+tc.want) || !strings.Contains(r.stderr, "--help") || r.stdout != "" {
					t.Errorf("exit %d, stdout %q, stderr\n%s\nwant exit %d, %q and a pointer to --help", r.code, r.stdout, r.stderr, exitUsage, "probe: "+tc.want)
				}
			})
		}
	}
	if !server.AcceptedNothing() {
		t.Error("the --server was reached for a command line that is refused")
	}
}

// TestPingRefused has the server refuse echoes: the policy the first (no
// echo went out: no summary, the refusal said as every command says it),
// and a limit the second, after one was answered (the summary counts the
// one sent, then the refusal).
func TestPingRefused(t *testing.T) {
	t.Parallel()
	r := probe(probetest.Context(t), nil, "ping", "-c", "2", "224.0.0.1")
	if want := "probe: policy 224.0.0.1: denied by the target policy, rule \"built-in: multicast\" (stage POLICY, reason DENIED)\n"; r.code != exitRejected || r.stdout != "" || r.stderr != want {
		t.Errorf("denied: exit %d, stdout %q, stderr %q; want %d, nothing and %q", r.code, r.stdout, r.stderr, exitRejected, want)
	}

	srv := probetest.ServeSweeps(t)
	var calls atomic.Int32
	srv.AnswerConnects(func() (*netprobev1.ConnectResponse, error) {
		if calls.Add(1) > 1 {
			return nil, status.Error(codes.ResourceExhausted, "over the caller's rate")
		}
		return &netprobev1.ConnectResponse{PeerAddress: "127.0.0.1", Icmp: &netprobev1.IcmpResult{
			PayloadBytes: 56, ReplyAddress: "127.0.0.1", ReplyTtl: 64, Rtt: durationpb.New(time.Millisecond)}}, nil
	})
	r = probe(probetest.Context(t), nil, "-s", srv.Addr, "ping", "-c", "3", "-i", "10ms", "127.0.0.1")
	want := "64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=1ms\n--- 127.0.0.1 ping statistics ---\n1 packets transmitted, 1 received, 0% packet loss\n"
	if r.code != exitRejected || !strings.HasPrefix(r.stdout, want) || !strings.Contains(r.stderr, "ResourceExhausted: over the caller's rate") {
		t.Errorf("over a limit: exit %d, stdout %q, stderr %q; want %d, %q... and the refusal", r.code, r.stdout, r.stderr, exitRejected, want)
	}
}
