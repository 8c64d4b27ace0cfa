package probecli

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestTraceFlags plays a user, or a script, that asks for a trace beyond
// the API's limits: each is a usage error naming the flag, found before
// anything is sent. The --server is a listener that counts connections:
// not even its health check may reach it.
func TestTraceFlags(t *testing.T) {
	t.Parallel()
	server := probetest.Listen(t, "127.0.0.1:0", nil)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // stderr's first line
	}{
		{"no hops", nil, []string{"trace", "--max-hops", "0", "127.0.0.1", "80"}, "--max-hops 0: want 1 to 64"},
		{"traceroute's -m", nil, []string{"trace", "-m", "5", "127.0.0.1", "80"}, "unknown shorthand flag: 'm' in -m: the highest TTL is --max-hops"},
		{"traceroute's -n", nil, []string{"trace", "-n", "127.0.0.1", "80"}, "unknown shorthand flag: 'n' in -n: names are looked up only with --names"},
		{"65 hops", nil, []string{"trace", "--max-hops", "65", "127.0.0.1", "80"}, "--max-hops 65: want 1 to 64"},
		{"negative hops", nil, []string{"trace", "--max-hops=-1", "127.0.0.1", "80"}, "--max-hops -1: want 1 to 64"},
		// 2^32 would be 0, the service's default, as the request's uint32.
		{"2^32 hops", nil, []string{"trace", "--max-hops", "4294967296", "127.0.0.1", "80"}, "--max-hops 4294967296: want 1 to 64"},
		{"hops past int64", nil, []string{"trace", "--max-hops", "99999999999999999999", "127.0.0.1", "80"}, `invalid argument "99999999999999999999" for "--max-hops" flag: ...`},
		{"no probes", nil, []string{"trace", "--probes", "0", "127.0.0.1", "80"}, "--probes 0: want 1 to 10"},
		{"11 probes", nil, []string{"trace", "--probes", "11", "127.0.0.1", "80"}, "--probes 11: want 1 to 10"},
		{"negative timeout", nil, []string{"trace", "--timeout=-1s", "127.0.0.1", "80"}, "--timeout -1s: must be positive"},
		{"zero timeout", nil, []string{"trace", "--timeout", "0s", "127.0.0.1", "80"}, "--timeout 0s: must be positive"},
		{"negative timeout from the environment", map[string]string{"NETPROBE_TIMEOUT": "-2s"}, []string{"trace", "127.0.0.1", "80"}, "--timeout -2s: must be positive"},
		{"timeout without a unit", nil, []string{"trace", "--timeout", "5", "127.0.0.1", "80"}, `invalid argument "5" for "--timeout" flag: "5" has no unit: did you mean 5s (or 5ms)?`},
		{"UDP, 65 hops", nil, []string{"trace", "--udp", "--max-hops", "65", "127.0.0.1", "80"}, "--max-hops 65: want 1 to 64"},
		{"UDP, 11 probes", nil, []string{"trace", "--udp", "--probes", "11", "127.0.0.1", "80"}, "--probes 11: want 1 to 10"},
		{"connect --trace over UDP", nil, []string{"connect", "--trace", "--udp", "127.0.0.1", "80"}, "--trace traces a connect that failed, and a UDP connect sends nothing to fail: use probe trace --udp"},
	} {
		for _, mode := range []struct {
			name  string
			flags []string
		}{{"in-process", nil}, {"server", []string{"--server", server.Addr()}}} {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				r := probe(probetest.Context(t), tc.env, append(tc.args, mode.flags...)...)
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

// TestHopText names what answered a hop, in words, for each family's
// ICMP types and codes; the codes no table names are given by number.
func TestHopText(t *testing.T) {
	t.Parallel()
	v4 := &client.Path{Destination: netip.MustParseAddrPort("198.18.4.1:80")}
	v6 := &client.Path{Destination: netip.MustParseAddrPort("[2001:db8:4::1]:80")}
	mapped := &client.Path{Destination: netip.MustParseAddrPort("[::ffff:198.18.4.1]:80")}
	for _, tc := range []struct {
		name string
		path *client.Path
		hop  client.Hop
		want string
	}{
		{"none", v4, client.Hop{Answer: client.HopAnswerNone}, "no answer"},
		{"SYN-ACK", v4, client.Hop{Answer: client.HopAnswerSYNACK}, "SYN-ACK"},
		{"RST", v6, client.Hop{Answer: client.HopAnswerRST}, "RST: the port is closed"},
		{"UDP port unreachable", v4, client.Hop{Answer: client.HopAnswerPortUnreachable, ICMPType: 3, ICMPCode: 3}, "port unreachable: the port is closed (ICMP 3/3)"},
		{"UDP port unreachable, IPv6", v6, client.Hop{Answer: client.HopAnswerPortUnreachable, ICMPType: 1, ICMPCode: 4}, "port unreachable: the port is closed (ICMPv6 1/4)"},
		{"datagram", v4, client.Hop{Answer: client.HopAnswerDatagram}, "a datagram: the port answered"},
		{"time exceeded", v4, client.Hop{Answer: client.HopAnswerTimeExceeded, ICMPType: 11}, "time exceeded"},
		{"reassembly", v4, client.Hop{Answer: client.HopAnswerTimeExceeded, ICMPType: 11, ICMPCode: 1}, "fragment reassembly time exceeded (ICMP 11/1)"},
		{"hop limit", v6, client.Hop{Answer: client.HopAnswerTimeExceeded, ICMPType: 3}, "time exceeded"},
		{"network unreachable", v4, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 3, ICMPCode: 0}, "unreachable: network unreachable (ICMP 3/0)"},
		{"host unreachable", v4, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 3, ICMPCode: 1}, "unreachable: host unreachable (ICMP 3/1)"},
		{"port unreachable", v4, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 3, ICMPCode: 3}, "unreachable: port unreachable (ICMP 3/3)"},
		{"fragmentation needed", v4, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 3, ICMPCode: 4}, "unreachable: fragmentation needed (ICMP 3/4)"},
		{"prohibited", v4, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 3, ICMPCode: 13}, "unreachable: communication administratively prohibited (ICMP 3/13)"},
		{"precedence cutoff", v4, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 3, ICMPCode: 15}, "unreachable: precedence cutoff in effect (ICMP 3/15)"},
		{"unknown code", v4, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 3, ICMPCode: 16}, "unreachable: code 16 (ICMP 3/16)"},
		{"an IPv4-mapped destination is IPv4", mapped, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 3, ICMPCode: 13}, "unreachable: communication administratively prohibited (ICMP 3/13)"},
		{"parameter problem", v4, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 12}, "parameter problem (ICMP 12/0)"},
		{"no route", v6, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 1, ICMPCode: 0}, "unreachable: no route to destination (ICMPv6 1/0)"},
		{"prohibited, IPv6", v6, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 1, ICMPCode: 1}, "unreachable: communication administratively prohibited (ICMPv6 1/1)"},
		{"address unreachable", v6, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 1, ICMPCode: 3}, "unreachable: address unreachable (ICMPv6 1/3)"},
		{"port unreachable, IPv6", v6, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 1, ICMPCode: 4}, "unreachable: port unreachable (ICMPv6 1/4)"},
		{"reject route", v6, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 1, ICMPCode: 6}, "unreachable: reject route to destination (ICMPv6 1/6)"},
		{"unknown code, IPv6", v6, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 1, ICMPCode: 200}, "unreachable: code 200 (ICMPv6 1/200)"},
		{"packet too big", v6, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 2}, "packet too big (ICMPv6 2/0)"},
		{"parameter problem, IPv6", v6, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 4, ICMPCode: 1}, "parameter problem (ICMPv6 4/1)"},
		{"another ICMP error", v4, client.Hop{Answer: client.HopAnswerUnreachable, ICMPType: 5, ICMPCode: 1}, "an ICMP error (ICMP 5/1)"},
	} {
		if got := hopText(tc.path, tc.hop); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestPathEnd says where each kind of path ends: the words after
// connect --trace's "TIMEOUT at CONNECT; ".
func TestPathEnd(t *testing.T) {
	t.Parallel()
	r1 := client.Hop{TTL: 1, Addr: netip.MustParseAddr("198.18.1.1"), Answer: client.HopAnswerTimeExceeded, ICMPType: 11, Sent: 1, Answered: 1}
	silent := func(ttl int) client.Hop { return client.Hop{TTL: ttl, Answer: client.HopAnswerNone, Sent: 1} }
	dst := netip.MustParseAddrPort("198.18.4.1:80")
	for _, tc := range []struct {
		name string
		path client.Path
		want string
	}{
		{"reached", client.Path{End: client.PathEndReached, Reached: true, Hops: []client.Hop{r1, {TTL: 2, Addr: dst.Addr(), Answer: client.HopAnswerSYNACK}}},
			"reached 198.18.4.1:80 at hop 2 (SYN-ACK)"},
		{"unreachable", client.Path{End: client.PathEndUnreachable, Hops: []client.Hop{{TTL: 1, Addr: r1.Addr, Answer: client.HopAnswerUnreachable, ICMPType: 3, ICMPCode: 0}}},
			"198.18.1.1 (hop 1) answered unreachable: network unreachable (ICMP 3/0)"},
		{"silence", client.Path{End: client.PathEndSilence, Hops: []client.Hop{r1, silent(2), silent(3), silent(4), silent(5), silent(6)}},
			"last hop that answered: 198.18.1.1 (hop 1); nothing beyond it"},
		{"silence from the first hop", client.Path{End: client.PathEndSilence, Hops: []client.Hop{silent(1), silent(2), silent(3), silent(4), silent(5)}},
			"no hop answered; nothing beyond it"},
		{"max hops", client.Path{End: client.PathEndMaxHops, Hops: []client.Hop{r1}},
			"last hop that answered: 198.18.1.1 (hop 1); the target did not answer within 1 hop"},
		{"timeout", client.Path{End: client.PathEndTimeout, Timeout: 2 * time.Second, Hops: []client.Hop{r1, silent(2)}},
			"last hop that answered: 198.18.1.1 (hop 1); the trace's 2s ran out"},
		{"shutdown", client.Path{End: client.PathEndServerShutdown, Hops: []client.Hop{r1}},
			"last hop that answered: 198.18.1.1 (hop 1); the probe server cut the trace short as it shut down"},
		{"unsupported", client.Path{End: client.PathEndUnsupported, Err: &client.ProbeError{Stage: client.StageSocket, Reason: client.ReasonOther, Address: "198.18.4.1:80", Message: "tracing needs IP_RECVERR, which only Linux has", Step: -1}},
			"no trace: socket 198.18.4.1:80: tracing needs IP_RECVERR, which only Linux has (stage SOCKET, reason OTHER)"},
	} {
		tc.path.Destination = dst
		if got := pathEnd(&tc.path); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestTraceUDP runs probe trace --udp on loopback: a closed port's path
// is one hop, the target's port unreachable (exit 0); an open port that
// keeps silent is not reached, and the error says why that may be (exit
// 1), not that the connect got there.
func TestTraceUDP(t *testing.T) {
	t.Parallel()
	closed := closedPort(t, "udp")
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	silentPort := fmt.Sprint(silent.LocalAddr().(*net.UDPAddr).Port)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string // the start of its last line: the times vary
		stderr string
	}{
		{"closed port", []string{"trace", "--udp", "127.0.0.1", closed}, 0,
			"reached 127.0.0.1:" + closed + " at hop 1 (port unreachable: the port is closed (ICMP 3/3)); the trace took ", ""},
		{"silent port", []string{"trace", "--udp", "--timeout", "1500ms", "127.0.0.1", silentPort}, 1,
			"not reached: no hop answered; the trace's 1.5s ran out; the trace took ", "probe: trace: 127.0.0.1:" + silentPort + " did not answer: an open UDP port may not answer a probe's datagram\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := probe(probetest.Context(t), nil, tc.args...)
			lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			last := lines[len(lines)-1]
			if r.code != tc.code || !strings.HasPrefix(last, tc.stdout) || r.stderr != tc.stderr {
				t.Errorf("exit %d, stdout\n%s\nstderr %q\nwant exit %d, a last line %q... and stderr %q", r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}
