package probecli

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// The chain's target ports, one per behaviour, as cmd/probed's TestTrace
// has them.
const (
	chainPortOpen     = 80
	chainPortDropped  = 82 // r2 drops the SYNs
	chainPortRejected = 83 // r2 answers them administratively prohibited
	// chainPortLossyUDP is a closed UDP port, whose datagrams r2 loses
	// every other one of when their TTL ends there.
	chainPortLossyUDP = 95
)

// traceChain is a chain client - r1 - r2 - r3 - target whose target
// serves chainPortOpen, and whose r2 drops chainPortDropped's SYNs and
// rejects chainPortRejected's, and loses every other of
// chainPortLossyUDP's datagrams that it would answer, both families. No
// UDP port is open.
func traceChain(t *testing.T) *netlab.Chain {
	t.Helper()
	c := netlab.NewChain(t, 3)
	for _, ip := range []netip.Addr{c.Target.V4, c.Target.V6} {
		for _, p := range []uint16{chainPortOpen, chainPortDropped, chainPortRejected} {
			probetest.NewTarget(t, c.Target.Listen(t, netip.AddrPortFrom(ip, p).String()), func(conn net.Conn) { conn.Close() })
		}
	}
	c.Filter(t, 2, chainPortDropped, netlab.Drop)
	c.Filter(t, 2, chainPortRejected, netlab.Reject)
	c.LoseEveryOther(t, 2, chainPortLossyUDP)
	return c
}

// probeOn runs the probe binary on host with args.
func probeOn(t *testing.T, host *netlab.Host, args ...string) result {
	t.Helper()
	cmd := host.Command(probeBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("probe %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

// bothWays runs probe with args on host twice, the service in its process
// and in the probed at probedAddr, and checks each run's exit code and
// what it printed against want, compared as the doc tests compare it:
// times and ports aside.
func bothWays(t *testing.T, host *netlab.Host, probedAddr, name string, args []string, code int, want string) {
	t.Helper()
	for _, mode := range []struct {
		name  string
		flags []string
	}{{"in-process", nil}, {"probed", []string{"--server", probedAddr}}} {
		t.Run(name+"/"+mode.name, func(t *testing.T) {
			t.Parallel()
			r := probeOn(t, host, append(mode.flags, args...)...)
			if got := normalize(r.stdout + r.stderr); r.code != code || !matches(got, normalize(want)) {
				t.Errorf("exit %d, printed\n%s%s\nwant exit %d and\n%s", r.code, r.stdout, r.stderr, code, want)
			}
		})
	}
}

// TestTraceChain runs probe trace and probe connect --trace across a
// chain of namespaces, with the service in the CLI's process and in a
// probed beside it: a complete path, a drop at r2 (the last hop that
// answered, then silence), a reject at r2 (the unreachable in words, both
// families), several probes a hop (the loss column, none and all lost),
// and -o json carrying the path. What each prints is compared as the doc
// tests compare it: times and ports aside.
func TestTraceChain(t *testing.T) {
	t.Parallel()
	c := traceChain(t)
	p := probetest.StartProbed(t, c.Client.Command(probedBin, "--listen=127.0.0.1:0"))
	hopsTo := func(port string) string {
		return "trace to 198.18.4.1:" + port + " from 198.18.1.2:#\n" +
			" 1 198.18.1.1 # time exceeded\n" +
			" 2 198.18.2.1 # time exceeded\n" +
			" 3 198.18.3.1 # time exceeded\n"
	}
	prohibited := "unreachable: communication administratively prohibited"
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // stdout, then stderr, as normalize leaves them
	}{
		{"complete", []string{"trace", "198.18.4.1", "80"}, exitOK, hopsTo("80") +
			" 4 198.18.4.1 # SYN-ACK\n" +
			"reached 198.18.4.1:80 at hop 4 (SYN-ACK); the trace took # of #, every probe on one flow (Paris)\n"},
		{"complete IPv6", []string{"trace", "-6", "2001:db8:4::1", "80"}, exitOK,
			"trace to [2001:db8:4::1]:80 from [2001:db8:1::2]:#\n" +
				" 1 2001:db8:1::1 # time exceeded\n" +
				" 2 2001:db8:2::1 # time exceeded\n" +
				" 3 2001:db8:3::1 # time exceeded\n" +
				" 4 2001:db8:4::1 # SYN-ACK\n" +
				"reached [2001:db8:4::1]:80 at hop 4 (SYN-ACK); the trace took # of #, every probe on one flow (Paris)\n"},
		{"connect --trace, connected", []string{"connect", "--trace", "198.18.4.1", "80"}, exitOK,
			"connected to 198.18.4.1:80 from 198.18.1.2:# in # (total #), rtt #\n"},
		{"connect --trace, dropped at r2", []string{"connect", "--trace", "--timeout", "1s", "198.18.4.1", "82"}, exitTimeout,
			"trace to 198.18.4.1:82 from 198.18.1.2:#\n" +
				" 1 198.18.1.1 # time exceeded\n" +
				" 2 * no answer\n 3 * no answer\n 4 * no answer\n 5 * no answer\n 6 * no answer\n" +
				"probe: connect 198.18.4.1:82: timed out (stage CONNECT, reason TIMEOUT)\n" +
				"probe: TIMEOUT at CONNECT; last hop that answered: 198.18.1.1 (hop 1); nothing beyond it\n"},
		{"fetch --trace, dropped at r2", []string{"fetch", "--trace", "--timeout", "1s", "198.18.4.1", "82", "/"}, exitTimeout,
			"trace to 198.18.4.1:82 from 198.18.1.2:#\n" +
				" 1 198.18.1.1 # time exceeded\n" +
				" 2 * no answer\n 3 * no answer\n 4 * no answer\n 5 * no answer\n 6 * no answer\n" +
				"probe: connect 198.18.4.1:82: timed out (stage CONNECT, reason TIMEOUT)\n" +
				"probe: TIMEOUT at CONNECT; last hop that answered: 198.18.1.1 (hop 1); nothing beyond it\n"},
		// A fetch traces the failure of its exchange too, once the
		// connection is closed.
		{"fetch --trace, no match", []string{"fetch", "--trace", "--expect", "^SSH-", "198.18.4.1", "80"}, exitExpect,
			"connected to 198.18.4.1:80 from 198.18.1.2:# in # (total #), rtt #\n" +
				"sent 0 bytes, received 0; failed after #, rtt #\n" +
				hopsTo("80") +
				" 4 198.18.4.1 # SYN-ACK\n" +
				`probe: expect 198.18.4.1:80: no match for "^SSH-" before the peer closed; the last bytes received: "" (stage EXPECT, reason NO_MATCH, step 0)` + "\n" +
				"probe: NO_MATCH at EXPECT; reached 198.18.4.1:80 at hop 4 (SYN-ACK)\n"},
		{"fetch --trace, UDP refused", []string{"fetch", "--udp", "--trace", "-d", "x", "198.18.4.1", "96"}, exitReceive,
			"connected to 198.18.4.1:96 from 198.18.1.2:# in # (total #)\n" +
				"sent 1 byte, received 0; failed after #\n" +
				"trace to 198.18.4.1:96 from 198.18.1.2:#\n" +
				" 1 198.18.1.1 # time exceeded\n" +
				" 2 198.18.2.1 # time exceeded\n" +
				" 3 198.18.3.1 # time exceeded\n" +
				" 4 198.18.4.1 # port unreachable: the port is closed (ICMP 3/3)\n" +
				"probe: receive 198.18.4.1:96: connection refused (stage RECEIVE, reason REFUSED, errno ECONNREFUSED)\n" +
				"probe: REFUSED at RECEIVE; reached 198.18.4.1:96 at hop 4 (port unreachable: the port is closed (ICMP 3/3))\n"},
		{"dropped at r2", []string{"trace", "--timeout", "8s", "198.18.4.1", "82"}, exitTimeout,
			"trace to 198.18.4.1:82 from 198.18.1.2:#\n" +
				" 1 198.18.1.1 # time exceeded\n" +
				" 2 * no answer\n 3 * no answer\n 4 * no answer\n 5 * no answer\n 6 * no answer\n" +
				"not reached: last hop that answered: 198.18.1.1 (hop 1); nothing beyond it; the trace took # of #, every probe on one flow (Paris)\n" +
				"probe: connect 198.18.4.1:82: timed out (stage CONNECT, reason TIMEOUT)\n"},
		{"rejected at r2", []string{"trace", "198.18.4.1", "83"}, exitConnect,
			"trace to 198.18.4.1:83 from 198.18.1.2:#\n" +
				" 1 198.18.1.1 # time exceeded\n" +
				" 2 198.18.2.1 # " + prohibited + " (ICMP 3/13)\n" +
				"not reached: 198.18.2.1 (hop 2) answered " + prohibited + " (ICMP 3/13); the trace took # of #, every probe on one flow (Paris)\n" +
				"probe: connect 198.18.4.1:83: no route to host (stage CONNECT, reason HOST_UNREACHABLE, errno EHOSTUNREACH)\n"},
		{"rejected at r2, IPv6", []string{"connect", "--trace", "2001:db8:4::1", "83"}, exitConnect,
			"trace to [2001:db8:4::1]:83 from [2001:db8:1::2]:#\n" +
				" 1 2001:db8:1::1 # time exceeded\n" +
				" 2 2001:db8:2::1 # " + prohibited + " (ICMPv6 1/1)\n" +
				"probe: connect [2001:db8:4::1]:83: permission denied (stage CONNECT, reason PROHIBITED, errno EACCES)\n" +
				"probe: PROHIBITED at CONNECT; 2001:db8:2::1 (hop 2) answered " + prohibited + " (ICMPv6 1/1)\n"},
		{"three probes a hop", []string{"trace", "--probes", "3", "198.18.4.1:80"}, exitOK,
			"trace to 198.18.4.1:80 from 198.18.1.2:#\n" +
				" 1 198.18.1.1 # # # lost 0 of 3 (0%) time exceeded\n" +
				" 2 198.18.2.1 # # # lost 0 of 3 (0%) time exceeded\n" +
				" 3 198.18.3.1 # # # lost 0 of 3 (0%) time exceeded\n" +
				" 4 198.18.4.1 # # # lost 0 of 3 (0%) SYN-ACK\n" +
				"reached 198.18.4.1:80 at hop 4 (SYN-ACK); the trace took # of #, every probe on one flow (Paris)\n"},
		// The budget ends the trace in the silence: hop 2's three probes
		// are lost, and what it had begun of hop 3 is not counted.
		{"three probes a hop, dropped at r2", []string{"trace", "--probes", "3", "--timeout", "3500ms", "198.18.4.1:82"}, exitTimeout,
			"trace to 198.18.4.1:82 from 198.18.1.2:#\n" +
				" 1 198.18.1.1 # # # lost 0 of 3 (0%) time exceeded\n" +
				" 2 * lost 3 of 3 (100%) no answer\n" +
				"...\n" +
				"not reached: last hop that answered: 198.18.1.1 (hop 1); the trace's # ran out; the trace took # of #, every probe on one flow (Paris)\n" +
				"probe: connect 198.18.4.1:82: timed out (stage CONNECT, reason TIMEOUT)\n"},
	} {
		bothWays(t, c.Client, p.Addr, tc.name, tc.args, tc.code, tc.want)
	}

	// --names looks the hops up where the service runs: from a DNS
	// server in the client's namespace, which names two routers and the
	// target, and not r2. A probed whose policy denies r3's address does
	// not look it up.
	t.Run("names", func(t *testing.T) {
		t.Parallel()
		dns := dnstest.Serve(t, c.Client.ListenPacket(t, "127.0.0.1:0"))
		dns.SetPTR(netip.MustParseAddr("198.18.1.1"), "r1.lab.test")
		dns.SetPTR(netip.MustParseAddr("198.18.3.1"), "r3.lab.test")
		dns.SetPTR(netip.MustParseAddr("198.18.4.1"), "web.lab.test")
		named := probetest.StartProbed(t, c.Client.Command(probedBin, "--listen=127.0.0.1:0", "--dns-server="+dns.Addr, "--deny=198.18.3.1"))
		want := func(r3 string) string {
			return "trace to 198.18.4.1:80 from 198.18.1.2:#\n" +
				" 1 r1.lab.test (198.18.1.1) # time exceeded\n" +
				" 2 198.18.2.1 # time exceeded\n" +
				" 3 " + r3 + " # time exceeded\n" +
				" 4 web.lab.test (198.18.4.1) # SYN-ACK\n" +
				"reached 198.18.4.1:80 at hop 4 (SYN-ACK); the trace took # of #, every probe on one flow (Paris)\n"
		}
		for _, tc := range []struct {
			flags []string
			want  string
		}{
			{[]string{"--dns-server", dns.Addr}, want("r3.lab.test (198.18.3.1)")},
			{[]string{"--server", named.Addr}, want("198.18.3.1")},
		} {
			flags, want := tc.flags, tc.want
			r := probeOn(t, c.Client, append(flags, "trace", "--names", "198.18.4.1", "80")...)
			if got := normalize(r.stdout + r.stderr); r.code != exitOK || !matches(got, normalize(want)) {
				t.Errorf("%v: exit %d, printed\n%s%s\nwant exit 0 and\n%s", flags, r.code, r.stdout, r.stderr, want)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name string
			args []string
			code int
			hops int
			end  netprobev1.PathEnd
		}{
			{"trace", []string{"trace", "-o", "json", "198.18.4.1", "80"}, exitOK, 4, netprobev1.PathEnd_PATH_END_REACHED},
			{"connect --trace", []string{"connect", "-o", "json", "--trace", "198.18.4.1", "83"}, exitConnect, 2, netprobev1.PathEnd_PATH_END_UNREACHABLE},
			{"fetch --trace", []string{"fetch", "-o", "json", "--trace", "--expect", "^SSH-", "198.18.4.1", "80"}, exitExpect, 4, netprobev1.PathEnd_PATH_END_REACHED},
		} {
			r := probeOn(t, c.Client, tc.args...)
			var path *netprobev1.Path
			if tc.args[0] == "fetch" {
				// The connect message, then the summary, which has the path.
				lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
				var summary netprobev1.FetchResponse
				if err := protojson.Unmarshal([]byte(lines[len(lines)-1]), &summary); err != nil {
					t.Fatalf("%s: %v\n%s", tc.name, err, r.stdout)
				}
				path = summary.GetSummary().GetPath()
			} else {
				var resp netprobev1.ConnectResponse
				if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
					t.Fatalf("%s: %v\n%s", tc.name, err, r.stdout)
				}
				path = resp.GetPath()
			}
			if r.code != tc.code || len(path.GetHops()) != tc.hops || path.GetEnd() != tc.end || path.GetDestination() != "198.18.4.1:"+tc.args[len(tc.args)-1] {
				t.Errorf("%s: exit %d, path %v; want exit %d, %d hops to the target's address, %v", tc.name, r.code, path, tc.code, tc.hops, tc.end)
			}
		}
	})
}

// TestDocTraceExamples runs docs/cli.md's examples of a trace three
// routers away (those onChain) in the chain they describe, traceChain's,
// with the probe binary on its client, as TestDocExamples runs the others.
func TestDocTraceExamples(t *testing.T) {
	t.Parallel()
	c := traceChain(t)
	text, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	examples := 0
	for _, block := range consoleBlocks(string(text)) {
		for _, ex := range block {
			_, args, ok := parseCommand(ex.command)
			if !ok || !onChain(args) {
				continue
			}
			examples++
			t.Run(ex.command, func(t *testing.T) {
				t.Parallel()
				r := probeOn(t, c.Client, args...)
				if got, want := normalize(r.stdout+r.stderr), normalize(ex.output); !matches(got, want) {
					t.Errorf("$ %s\nprinted\n%s%s\nwant\n%s", ex.command, r.stdout, r.stderr, ex.output)
				}
			})
		}
	}
	if examples < 6 {
		t.Errorf("%d chain examples found in docs/cli.md, want its six", examples)
	}
}

// TestTraceRepeat checks connect --trace with --count: each failed
// probe's line is followed by where its path stopped; on loopback a closed
// port's path is one hop, the target's RST.
func TestTraceRepeat(t *testing.T) {
	t.Parallel()
	closed := closedPort(t, "tcp")
	r := probe(probetest.Context(t), nil, "connect", "--trace", "--count", "2", "--interval", "10ms", "127.0.0.1", closed)
	refused := "connect 127.0.0.1:" + closed + ": connection refused (stage CONNECT, reason REFUSED, errno ECONNREFUSED)"
	where := "REFUSED at CONNECT; reached 127.0.0.1:" + closed + " at hop 1 (RST: the port is closed)"
	want := "probe 1: " + refused + "\nprobe 1: " + where + "\nprobe 2: " + refused + "\nprobe 2: " + where + "\n" +
		"--- 127.0.0.1:" + closed + ": 2 probes, 2 failed, 100% loss\n"
	if r.code != exitConnect || r.stdout != want {
		t.Errorf("exit %d, stdout\n%s\nwant exit %d and\n%s", r.code, r.stdout, exitConnect, want)
	}
}

// TestTraceServerDefaults runs probe trace, without --timeout, against a
// probed whose --max-timeout (3s) is under the trace's 10s: the server's
// defaults apply, held to its maximum, where 10s asked of it was refused.
func TestTraceServerDefaults(t *testing.T) {
	t.Parallel()
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--max-timeout=3s", "--default-timeout=2s"))
	closed := probetest.ClosedPort(t, "tcp4", "127.0.0.1:0")
	r := probe(probetest.Context(t), nil, "-s", p.Addr, "trace", "127.0.0.1", fmt.Sprint(closed))
	if r.code != exitOK || !strings.Contains(r.stdout, " of 3s, every probe on one flow") {
		t.Errorf("exit %d, stdout %q, stderr %q; want the path, traced on the server's 3s", r.code, r.stdout, r.stderr)
	}
}

// TestSweepTraceCapText sweeps 17 closed ports with --trace: the 17th
// failure past the sweep's 16 traces says so, and not as a policy's
// refusal.
func TestSweepTraceCapText(t *testing.T) {
	t.Parallel()
	args := []string{"sweep", "--trace"}
	for range 17 {
		args = append(args, fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp4", "127.0.0.1:0")))
	}
	r := probe(probetest.Context(t), nil, args...)
	if r.code != exitSweepFailed || strings.Count(r.stderr, "reached 127.0.0.1:") != 16 || strings.Count(r.stderr, ": REFUSED at CONNECT; not traced: a sweep runs at most 16 traces\n") != 1 || strings.Contains(r.stderr, "policy") {
		t.Errorf("exit %d, stderr\n%s\nwant 16 paths and one 'not traced'", r.code, r.stderr)
	}
}
