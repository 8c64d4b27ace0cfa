package probecli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// The binaries built for these tests.
var probedBin, probeBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "probe-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for bin, pkg := range map[*string]string{&probedBin: "github.com/netprobe/netprobe/cmd/probed", &probeBin: "github.com/netprobe/netprobe/cmd/probe"} {
		if *bin, err = probetest.GoBuild(dir, pkg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}

// result is what one run of the CLI did.
type result struct {
	code           int
	stdout, stderr string
}

// probe runs the CLI's main entry with args and the environment env.
func probe(ctx context.Context, env map[string]string, args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, streams{in: strings.NewReader(""), out: &stdout, err: &stderr}, func(k string) string { return env[k] })
	return result{code, stdout.String(), stderr.String()}
}

// world is where the CLI's probes run: a DNS server on loopback, and a
// probed using it.
type world struct {
	dns *dnstest.Server
	// probed and metrics are the probed's gRPC and metrics addresses.
	probed, metrics string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	dns := dnstest.Start(t)
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--dns-server="+dns.Addr))
	return &world{dns: dns, probed: p.Addr, metrics: p.MetricsAddr}
}

// modes are the two ways to run the CLI: the service in-process, and a
// running probed. Both resolve through the world's DNS server.
func (w *world) modes() []struct {
	name  string
	flags []string
} {
	return []struct {
		name  string
		flags []string
	}{
		{"in-process", []string{"--dns-server", w.dns.Addr}},
		{"probed", []string{"--server", w.probed}},
	}
}

// closedPort is a loopback port where nothing listens, as a string.
func closedPort(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return fmt.Sprint(pc.LocalAddr().(*net.UDPAddr).Port)
	}
	return fmt.Sprint(probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
}

func port(tg *probetest.Target) string { return fmt.Sprint(tg.Port()) }

// webServer is an HTTP server on loopback that says hello.
func webServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := probetest.ServeHello(ln)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("web server: %v", err)
		}
	})
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// TestOutcomes runs each kind of probe outcome in both modes and checks the
// exit code, stdout and stderr.
func TestOutcomes(t *testing.T) {
	w := newWorld(t)
	w.dns.Drop("silent.test")
	tests := []struct {
		name string
		// setup returns the arguments; ptr is an address of 127/8 whose
		// reverse lookup this run may hold.
		setup  func(t *testing.T, ptr netip.Addr) []string
		code   int
		stdout string // a regular expression for all of stdout
		stderr string // a regular expression for all of stderr
	}{
		{
			name: "connect",
			setup: func(t *testing.T, _ netip.Addr) []string {
				return []string{"connect", "127.0.0.1", port(probetest.Listen(t, "127.0.0.1:0", nil))}
			},
			stdout: `^connected to 127\.0\.0\.1:\d+ from 127\.0\.0\.1:\d+ in \S+ \(total \S+\), rtt \S+\n$`,
			stderr: `^$`,
		},
		{
			name: "connect refused",
			setup: func(t *testing.T, _ netip.Addr) []string {
				return []string{"connect", "127.0.0.1", closedPort(t, "tcp")}
			},
			code:   exitConnect,
			stdout: `^$`,
			stderr: `^probe: connect 127\.0\.0\.1:\d+: connection refused \(stage CONNECT, reason REFUSED, errno ECONNREFUSED\)\n$`,
		},
		{
			name: "no such host",
			setup: func(*testing.T, netip.Addr) []string {
				return []string{"connect", "nosuch.test", "80"}
			},
			code:   exitResolve,
			stdout: `^$`,
			stderr: `^probe: resolve nosuch\.test: no such host \(stage RESOLVE, reason NO_SUCH_HOST\)\n$`,
		},
		{
			name: "timeout",
			setup: func(*testing.T, netip.Addr) []string {
				return []string{"connect", "--timeout", "300ms", "silent.test", "80"}
			},
			code:   exitTimeout,
			stdout: `^$`,
			stderr: `^probe: resolve silent\.test: timed out \(stage RESOLVE, reason TIMEOUT\)\n$`,
		},
		{
			name: "fetch HTTP",
			setup: func(t *testing.T, _ netip.Addr) []string {
				return []string{"fetch", "127.0.0.1", webServer(t), "/"}
			},
			stdout: `(?s)^HTTP/1\.0 200 OK\r\n.*\r\n\r\nhello\n$`,
			stderr: `^connected to 127\.0\.0\.1:\d+ from 127\.0\.0\.1:\d+ in \S+ \(total \S+\), rtt \S+\nsent 18 bytes, received \d+ \(first byte at \S+\); the target closed after \S+, rtt \S+\n$`,
		},
		{
			name: "fetch refused",
			setup: func(t *testing.T, _ netip.Addr) []string {
				return []string{"fetch", "-q", "127.0.0.1", closedPort(t, "tcp"), "/"}
			},
			code:   exitConnect,
			stdout: `^$`,
			stderr: `^probe: connect 127\.0\.0\.1:\d+: connection refused \(stage CONNECT, reason REFUSED, errno ECONNREFUSED\)\n$`,
		},
		{
			name: "send reset",
			setup: func(t *testing.T, ptr netip.Addr) []string {
				tg := probetest.Listen(t, netip.AddrPortFrom(ptr, 0).String(), probetest.ResetDuringReverseLookup(w.dns, ptr))
				return []string{"fetch", "-q", "--reverse", "--data", "hi", ptr.String(), port(tg)}
			},
			code:   exitSend,
			stdout: `^$`,
			stderr: `^probe: send 127\.0\.0\.\d+:\d+: connection reset by peer \(stage SEND, reason RESET, errno ECONNRESET\)\n$`,
		},
		{
			name: "UDP port unreachable",
			setup: func(t *testing.T, _ netip.Addr) []string {
				return []string{"fetch", "-q", "--udp", "--data", "hi", "127.0.0.1", closedPort(t, "udp")}
			},
			code:   exitReceive,
			stdout: `^$`,
			stderr: `^probe: receive 127\.0\.0\.1:\d+: connection refused \(stage RECEIVE, reason REFUSED, errno ECONNREFUSED\)\n$`,
		},
		{
			name:   "resolve",
			setup:  func(*testing.T, netip.Addr) []string { return []string{"resolve", "--port", "53", "udp"} },
			stdout: `^domain 53/udp from the (system|built-in) table\n$`,
			stderr: `^$`,
		},
		{
			name:   "connect to an unknown service",
			setup:  func(*testing.T, netip.Addr) []string { return []string{"connect", "127.0.0.1", "np-nosuch"} },
			code:   exitNoService,
			stdout: `^$`,
			stderr: `^probe: service lookup np-nosuch: unknown service \(stage SERVICE_LOOKUP, reason UNKNOWN_SERVICE\)\n$`,
		},
		{
			name:   "no such service",
			setup:  func(*testing.T, netip.Addr) []string { return []string{"resolve", "np-nosuch"} },
			code:   exitNoService,
			stdout: `^$`,
			stderr: `^probe: service lookup np-nosuch: unknown service \(stage SERVICE_LOOKUP, reason UNKNOWN_SERVICE\)\n$`,
		},
		{
			name:   "health",
			setup:  func(*testing.T, netip.Addr) []string { return []string{"health"} },
			stdout: `^SERVING\n$`,
			stderr: `^$`,
		},
	}
	for i, mode := range w.modes() {
		// Each mode holds the reverse lookups of its own address.
		ptr := netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)})
		t.Run(mode.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					args := append(tt.setup(t, ptr), mode.flags...)
					r := probe(probetest.Context(t), nil, args...)
					if r.code != tt.code {
						t.Errorf("probe %s: exit %d, want %d; stderr %q", strings.Join(args, " "), r.code, tt.code, r.stderr)
					}
					if !regexp.MustCompile(tt.stdout).MatchString(r.stdout) {
						t.Errorf("stdout %q does not match %q", r.stdout, tt.stdout)
					}
					if !regexp.MustCompile(tt.stderr).MatchString(r.stderr) {
						t.Errorf("stderr %q does not match %q", r.stderr, tt.stderr)
					}
				})
			}
		})
	}
}

// TestSameOutput checks that the in-process service and a probed print the
// same, but for the numbers that change from run to run.
func TestSameOutput(t *testing.T) {
	w := newWorld(t)
	w.dns.SetAddrs("both.test", netip.MustParseAddr("127.0.0.1"))
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	closed := closedPort(t, "tcp")
	varying := regexp.MustCompile(`:\d+|[\d.]+[µnm]?s\b`)
	for _, args := range [][]string{
		{"connect", "both.test", port(tg)},
		{"connect", "both.test", closed},
		{"resolve", "https"},
	} {
		var outs []string
		for _, mode := range w.modes() {
			r := probe(probetest.Context(t), nil, append(args, mode.flags...)...)
			outs = append(outs, fmt.Sprintf("exit %d\n%s%s", r.code, varying.ReplaceAllString(r.stdout, "#"), varying.ReplaceAllString(r.stderr, "#")))
		}
		if outs[0] != outs[1] {
			t.Errorf("probe %s: in-process printed\n%s\nprobed printed\n%s", strings.Join(args, " "), outs[0], outs[1])
		}
	}
}

// TestUsage checks that bad command lines exit 2 with a clear message and
// dial nothing.
func TestUsage(t *testing.T) {
	t.Parallel()
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	p := port(tg)
	tests := []struct {
		args []string
		env  map[string]string
		want string // the first line of stderr
		help string // the command named in the hint; "" for none, when the server refused the request
	}{
		{[]string{"frob"}, nil, `probe: unknown command "frob" for "probe"`, "probe"},
		{nil, nil, "probe: a command is required: connect, trace, ping, fetch, resolve, health or sweep", "probe"},
		{[]string{"connect", "127.0.0.1"}, nil, `probe: target "127.0.0.1" has no port: give HOST PORT, or HOST:PORT ([IPv6]:PORT)`, "probe connect"},
		{[]string{"connect", "[::1]"}, nil, `probe: target "[::1]" has no port: give HOST PORT, or HOST:PORT ([IPv6]:PORT)`, "probe connect"},
		{[]string{"connect", "127.0.0.1:"}, nil, `probe: target "127.0.0.1:": PORT is empty: give a port number or a service name`, "probe connect"},
		{[]string{"connect", "127.0.0.1:" + p, "80"}, nil, "probe: want HOST PORT|SERVICE or HOST:PORT, got 2 argument(s)", "probe connect"},
		{[]string{"fetch", "127.0.0.1", p, "/", "extra"}, nil, "probe: want HOST PORT|SERVICE [PATH] or HOST:PORT [PATH], got 4 argument(s)", "probe fetch"},
		{[]string{"fetch", "127.0.0.1:" + p, "/", "extra"}, nil, "probe: want HOST PORT|SERVICE [PATH] or HOST:PORT [PATH], got 3 argument(s)", "probe fetch"},
		{[]string{"connect", "127.0.0.1", "70000"}, nil, "probe: PORT 70000 is out of range 1-65535", "probe connect"},
		{[]string{"connect", "127.0.0.1", "ab c"}, nil, `probe: invalid request: target.service: "ab c" is not a valid service name: character ' ' is not allowed`, ""},
		{[]string{"connect", "münchen.test", p}, nil, `probe: invalid request: target.host: "münchen.test" is not an IP address or a valid DNS name: character 'ü' is not allowed: a name with letters beyond ASCII is given in its IDNA form (xn--...)`, ""},
		{[]string{"connect", "m\xfcnchen.test", p}, nil, `probe: HOST "m\xfcnchen.test" is not UTF-8`, "probe connect"},
		{[]string{"sweep", "m\xfcnchen.test:" + p}, nil, `probe: target "m\xfcnchen.test:` + p + `" is not UTF-8`, "probe sweep"},
		{[]string{"connect", "-4", "-6", "127.0.0.1", p}, nil, "probe: if any flags in the group [ipv4 ipv6] are set none of the others can be; [ipv4 ipv6] were all set", "probe connect"},
		{[]string{"fetch", "--data", "x", "127.0.0.1", p, "/"}, nil, "probe: PATH asks for an HTTP GET; --data and --data-file send raw bytes instead: give one or the other", "probe fetch"},
		{[]string{"fetch", "--data-file", "/nonexistent/request", "127.0.0.1", p}, nil, "probe: open /nonexistent/request: no such file or directory", "probe fetch"},
		{[]string{"connect", "--server", "127.0.0.1:1", "--dns-server", "127.0.0.1:53", "127.0.0.1", p}, nil, "probe: --dns-server applies to the in-process service and to dns:/// server names; the server given with --server resolves with its own", "probe connect"},
		{[]string{"connect", "-o", "yaml", "127.0.0.1", p}, nil, `probe: --output "yaml": want text or json`, "probe connect"},
		{[]string{"connect", "--timeout", "1m30s", "127.0.0.1", p}, nil, "probe: invalid request: timeout: 1m30s is over the server's maximum of 1m0s\nprobe: timeout is what --timeout sets", ""},
		{[]string{"connect", "127.0.0.1", p}, map[string]string{"NETPROBE_TIMEOUT": "soon"}, `probe: NETPROBE_TIMEOUT="soon": invalid argument "soon" for "--timeout" flag: "soon" is not a duration such as 500ms, 5s or 1m`, "probe connect"},
		{[]string{"connect", "--frob", "127.0.0.1", p}, nil, "probe: unknown flag: --frob", "probe connect"},
		{[]string{"trace", "127.0.0.1"}, nil, `probe: target "127.0.0.1" has no port: give HOST PORT, or HOST:PORT ([IPv6]:PORT)`, "probe trace"},
		// probe trace's --timeout is the trace's budget, which the server caps.
		{[]string{"trace", "--timeout", "1m30s", "127.0.0.1", p}, nil, "probe: invalid request: trace.timeout: 1m30s is over the server's maximum of 1m0s\n" +
			"probe: trace.timeout is what --timeout (probe trace's; connect, fetch and sweep --trace take the server's default) sets", ""},
		{[]string{"resolve"}, nil, "probe: want SERVICE [PROTOCOL] or --port N [PROTOCOL], got 0 arguments", "probe resolve"},
		{[]string{"resolve", "--port", "0"}, nil, "probe: --port 0: want 1-65535", "probe resolve"},
		{[]string{"resolve", "\xff"}, nil, `probe: SERVICE "\xff" is not UTF-8`, "probe resolve"},
		{[]string{"resolve", "65536"}, nil, `probe: SERVICE "65536" is a number, and out of the ports' range 1-65535`, "probe resolve"},
		{[]string{"resolve", "https", "t*p"}, nil, `probe: PROTOCOL "t*p": want tcp or udp`, "probe resolve"},
		{[]string{"resolve", "http", "sctp"}, nil, `probe: PROTOCOL "sctp": want tcp or udp`, "probe resolve"},
		{[]string{"connect", "--timeout", "5", "127.0.0.1", p}, nil, `probe: invalid argument "5" for "--timeout" flag: "5" has no unit: did you mean 5s (or 5ms)?`, "probe connect"},
		{[]string{"sweep", "--concurrency", "-5", "127.0.0.1:" + p}, nil, "probe: --concurrency -5: want 1 or more", "probe sweep"},
		{[]string{"sweep", "--srv", ""}, nil, "probe: --srv is empty: give a name such as _https._tcp.example.com", "probe sweep"},
		{[]string{"completion", "tcsh"}, nil, `probe: unknown command "tcsh" for "probe completion"`, "probe completion"},
		{[]string{"connect", "--count", "-1", "127.0.0.1", p}, nil, "probe: --count -1: want 0 (until interrupted) or more", "probe connect"},
		{[]string{"fetch", "--max-payload-bytes", "4", "--data", "hello", "127.0.0.1", p}, nil, "probe: the request is over the probe server's cap of 4 bytes (--max-payload-bytes, as probed's)", "probe fetch"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := probe(probetest.Context(t), tt.env, tt.args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d", r.code, exitUsage)
			}
			want := tt.want + "\n"
			if tt.help != "" {
				want += "Run \"" + tt.help + " --help\" for usage.\n"
			}
			if r.stderr != want || r.stdout != "" {
				t.Errorf("stdout %q, stderr\n%q\nwant no stdout and stderr\n%q", r.stdout, r.stderr, want)
			}
		})
	}
	if !tg.AcceptedNothing() {
		t.Error("a bad command line dialled the target")
	}
}

// TestJSON checks that -o json prints the service's messages, one per line.
func TestJSON(t *testing.T) {
	t.Parallel()
	tg := probetest.Listen(t, "127.0.0.1:0", probetest.Echo)
	ctx := probetest.Context(t)

	r := probe(ctx, map[string]string{"NETPROBE_OUTPUT": "json"}, "connect", "127.0.0.1", port(tg))
	var cr netprobev1.ConnectResponse
	lines := decodeLines(t, r.stdout, func() proto.Message { return &cr })
	if r.code != 0 || lines != 1 || cr.GetPeerAddress() != tg.Addr() || cr.GetError() != nil {
		t.Errorf("connect -o json: exit %d, %d lines, %v", r.code, lines, &cr)
	}

	closed := closedPort(t, "tcp")
	r = probe(ctx, nil, "connect", "-o", "json", "127.0.0.1", closed)
	lines = decodeLines(t, r.stdout, func() proto.Message { return &cr })
	if r.code != exitConnect || lines != 1 || cr.GetError().GetStage() != netprobev1.Stage_STAGE_CONNECT || cr.GetError().GetErrno() != "ECONNREFUSED" {
		t.Errorf("connect -o json to a closed port: exit %d, %d lines, %v", r.code, lines, &cr)
	}

	r = probe(ctx, nil, "fetch", "-o", "json", "--data", "one\ntwo\n", "--lines", "127.0.0.1", port(tg))
	var events []*netprobev1.FetchResponse
	decodeLines(t, r.stdout, func() proto.Message {
		events = append(events, &netprobev1.FetchResponse{})
		return events[len(events)-1]
	})
	if r.code != 0 || r.stderr != "" || len(events) != 4 ||
		events[0].GetConnect().GetPeerAddress() != tg.Addr() ||
		string(events[1].GetData().GetData()) != "one\n" || string(events[2].GetData().GetData()) != "two\n" ||
		events[3].GetSummary().GetEndReason() != netprobev1.EndReason_END_REASON_EOF || events[3].GetSummary().GetBytesReceived() != 8 {
		t.Errorf("fetch -o json: exit %d, stderr %q, events %v", r.code, r.stderr, events)
	}

	r = probe(ctx, nil, "resolve", "-o", "json", "https")
	var rr netprobev1.ResolveServiceResponse
	if lines := decodeLines(t, r.stdout, func() proto.Message { return &rr }); r.code != 0 || lines != 1 || rr.GetPort() != 443 {
		t.Errorf("resolve -o json: exit %d, %v", r.code, &rr)
	}

	r = probe(ctx, nil, "health", "-o", "json")
	var hr healthpb.HealthCheckResponse
	if lines := decodeLines(t, r.stdout, func() proto.Message { return &hr }); r.code != 0 || lines != 1 || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health -o json: exit %d, %v", r.code, &hr)
	}
}

// decodeLines reads each line of out as protojson into next()'s message and
// returns the number of lines.
func decodeLines(t *testing.T, out string, next func() proto.Message) int {
	t.Helper()
	n := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if err := protojson.Unmarshal(sc.Bytes(), next()); err != nil {
			t.Fatalf("line %d %q: %v", n+1, sc.Text(), err)
		}
		n++
	}
	return n
}

// TestServerErrors checks the exit codes for a probe server that is not
// there and one that refuses the call.
func TestServerErrors(t *testing.T) {
	t.Parallel()
	down := "127.0.0.1:" + closedPort(t, "tcp")
	r := probe(probetest.Context(t), map[string]string{"NETPROBE_SERVER": down}, "health")
	if r.code != exitUnavailable || !strings.HasPrefix(r.stderr, "probe: probe server "+down+": Unavailable: ") {
		t.Errorf("health of a dead server: exit %d, stderr %q", r.code, r.stderr)
	}

	// A caller allowed one probe, ever: the second is refused.
	srv := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Admission.Rate, c.Admission.Burst = 1e-9, 1 }))
	target := probetest.Listen(t, "127.0.0.1:0", nil)
	host, port, _ := net.SplitHostPort(target.Addr())
	if r = probe(probetest.Context(t), nil, "connect", "--server", srv.Addr, host, port); r.code != exitOK {
		t.Fatalf("the first probe: exit %d, stderr %q", r.code, r.stderr)
	}
	r = probe(probetest.Context(t), nil, "connect", "--server", srv.Addr, host, port)
	want := "probe: probe server " + srv.Addr + ": ResourceExhausted: peer 127.0.0.1 is over its rate of 1e-09 probes a second (burst 1)\n"
	if r.code != exitRejected || r.stderr != want {
		t.Errorf("a refused call: exit %d, stderr %q; want %d, %q", r.code, r.stderr, exitRejected, want)
	}
}

// TestTLSAndToken asks a probed that wants TLS and a bearer token.
func TestTLSAndToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, dir, ca.Issue(t, "probed", true))
	caFile := filepath.Join(dir, "ca.pem")
	tokens := filepath.Join(dir, "tokens")
	const token = "cli-0123456789abcdef"
	for path, text := range map[string]string{caFile: string(ca.PEM), tokens: "cli " + token + "\n"} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--tls-cert="+certFile, "--tls-key="+keyFile, "--tokens-file="+tokens))
	env := map[string]string{"NETPROBE_SERVER": p.Addr, "NETPROBE_CA_FILE": caFile}

	r := probe(probetest.Context(t), env, "resolve", "--token", token, "https")
	if r.code != exitOK || r.stdout == "" {
		t.Errorf("with the token: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = probe(probetest.Context(t), env, "resolve", "https")
	if r.code != exitRejected || !strings.Contains(r.stderr, "Unauthenticated") {
		t.Errorf("without the token: exit %d, stderr %q; want %d and Unauthenticated", r.code, r.stderr, exitRejected)
	}
	r = probe(probetest.Context(t), env, "health")
	if r.code != exitOK || r.stdout != "SERVING\n" {
		t.Errorf("health without the token: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = probe(probetest.Context(t), nil, "health", "--token", token)
	if r.code != exitUsage || !strings.HasPrefix(r.stderr, "probe: --tls, --ca-file, --cert-file, --key-file and --token are for a --server") {
		t.Errorf("a token in-process: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestPolicyRefusal probes the cloud metadata address in-process: the
// default policy refuses it before any packet leaves.
func TestPolicyRefusal(t *testing.T) {
	t.Parallel()
	r := probe(probetest.Context(t), nil, "connect", "169.254.169.254", "80")
	want := `probe: policy 169.254.169.254:80: denied by the target policy, rule "built-in: link-local (cloud metadata)" (stage POLICY, reason DENIED)` + "\n"
	if r.code != exitRejected || r.stderr != want || r.stdout != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q", r.code, r.stdout, r.stderr, exitRejected, want)
	}
}

// TestInterrupt cancels a probe in flight, as SIGINT does.
func TestInterrupt(t *testing.T) {
	t.Parallel()
	dns := dnstest.Start(t)
	release := make(chan struct{})
	defer close(release)
	queried := dns.HoldPTR(netip.MustParseAddr("127.0.0.20"), release)
	tg := probetest.Listen(t, "127.0.0.20:0", nil)
	ctx, cancel := context.WithCancel(probetest.Context(t))
	done := make(chan result, 1)
	go func() {
		done <- probe(ctx, nil, "connect", "--dns-server", dns.Addr, "--reverse", "127.0.0.20", port(tg))
	}()
	select {
	case <-queried:
	case <-time.After(probetest.Timeout):
		t.Fatal("the probe never looked the peer up")
	}
	cancel()
	r := <-done
	if r.code != exitInterrupted || !strings.HasPrefix(r.stderr, "probe: in-process probe server: Canceled: ") {
		t.Errorf("exit %d, stderr %q; want %d and the cancellation", r.code, r.stderr, exitInterrupted)
	}

	// A repeated run interrupted before any probe ended is no success.
	queried = dns.HoldPTR(netip.MustParseAddr("127.0.0.20"), release)
	ctx, cancel = context.WithCancel(probetest.Context(t))
	go func() {
		done <- probe(ctx, nil, "connect", "--count", "0", "--dns-server", dns.Addr, "--reverse", "127.0.0.20", port(tg))
	}()
	select {
	case <-queried:
	case <-time.After(probetest.Timeout):
		t.Fatal("the repeated probe never looked the peer up")
	}
	cancel()
	r = <-done
	if want := "--- 127.0.0.20:" + port(tg) + ": 0 probes, 0 failed, 0% loss\n"; r.code != exitInterrupted || r.stdout != want || r.stderr != "probe: interrupted before any answer\n" {
		t.Errorf("--count 0: exit %d, stdout %q, stderr %q; want %d, %q and the interruption", r.code, r.stdout, r.stderr, exitInterrupted, want)
	}
}

// TestPingInterrupted interrupts ping's first echo: as ping counts it, it
// was transmitted and got no reply, and the run is no success.
func TestPingInterrupted(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	a := &app{streams: streams{out: &out, err: &out}}
	ctx, cancel := context.WithCancel(context.Background())
	err := a.repeatAs(ctx, repeatFlags{interval: time.Second}, "198.18.0.1", pingStyle, func(ctx context.Context) outcome {
		cancel()
		return outcome{err: ctx.Err()}
	})
	want := "--- 198.18.0.1 ping statistics ---\n1 packets transmitted, 0 received, 100% packet loss\n"
	if out.String() != want || exitCode(err) != exitInterrupted {
		t.Errorf("printed %q, exit %d (%v); want %q and %d", out.String(), exitCode(err), err, want, exitInterrupted)
	}
}

// TestBinary runs the built binary: exit status, --version, completion.
func TestBinary(t *testing.T) {
	t.Parallel()
	closed := closedPort(t, "tcp")
	cmd := exec.CommandContext(probetest.Context(t), probeBin, "connect", "127.0.0.1", closed)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	wantErr := "probe: connect 127.0.0.1:" + closed + ": connection refused (stage CONNECT, reason REFUSED, errno ECONNREFUSED)\n"
	if !errors.As(err, &exit) || exit.ExitCode() != exitConnect || stderr.String() != wantErr {
		t.Errorf("probe connect to a closed port: %v, stderr %q; want exit %d, %q", err, stderr.String(), exitConnect, wantErr)
	}

	out, err := exec.CommandContext(probetest.Context(t), probeBin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "probe version ") {
		t.Errorf("probe --version = %q, %v", out, err)
	}
	out, err = exec.CommandContext(probetest.Context(t), probeBin, "completion", "bash").Output()
	if err != nil || !strings.Contains(string(out), "__start_probe") {
		t.Errorf("probe completion bash: %v, %d bytes without __start_probe", err, len(out))
	}
	out, err = exec.CommandContext(probetest.Context(t), probeBin, "--help").Output()
	if err != nil || !strings.Contains(string(out), "Exit codes:\n") || !strings.Contains(string(out), "   28  a stage timed out") {
		t.Errorf("probe --help: %v, want the exit codes in\n%s", err, out)
	}
}

// TestSweep sweeps a mixed list from two probed processes: the matrix, the
// JSON lines and the exit code.
func TestSweep(t *testing.T) {
	t.Parallel()
	var servers []string
	for range 2 {
		p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--deny=127.0.0.3"))
		servers = append(servers, p.Addr)
	}
	up := port(probetest.Listen(t, "127.0.0.1:0", nil))
	closed := closedPort(t, "tcp")
	targets := []string{"127.0.0.1:" + up, "127.0.0.1:" + closed, "127.0.0.3:" + up}
	args := append([]string{"sweep", "--server", servers[0], "--server", servers[1]}, targets...)

	r := probe(probetest.Context(t), nil, args...)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	want := []string{
		fmt.Sprintf(`^target +%s +%s$`, regexp.QuoteMeta(servers[0]), regexp.QuoteMeta(servers[1])),
		fmt.Sprintf(`^127\.0\.0\.1:%s +ok \S+ +ok \S+$`, up),
		fmt.Sprintf(`^127\.0\.0\.1:%s +REFUSED +REFUSED$`, closed),
		fmt.Sprintf(`^127\.0\.0\.3:%s +DENIED +DENIED$`, up),
	}
	if r.code != exitSweepFailed || len(lines) != len(want) || r.stderr != "probe: sweep: 4 of 6 probes failed (3 targets, 2 servers)\n" {
		t.Fatalf("exit %d, stdout\n%s\nstderr %q", r.code, r.stdout, r.stderr)
	}
	for i, re := range want {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %q", i, lines[i], re)
		}
	}

	r = probe(probetest.Context(t), nil, append(args, "-o", "json")...)
	type line struct {
		Server string          `json:"server"`
		Result json.RawMessage `json:"result"`
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var ln line
		if err := json.Unmarshal([]byte(l), &ln); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		var res netprobev1.SweepResponse
		if err := protojson.Unmarshal(ln.Result, &res); err != nil {
			t.Fatal(err)
		}
		outcome := "ok"
		if e := res.GetConnect().GetError(); e != nil {
			outcome = e.GetReason().String()
		}
		got[fmt.Sprintf("%s %d", ln.Server, res.GetIndex())] = outcome
	}
	for _, s := range servers {
		for i, w := range []string{"ok", "REASON_REFUSED", "REASON_DENIED"} {
			if got[fmt.Sprintf("%s %d", s, i)] != w {
				t.Errorf("server %s target %d: %q, want %q", s, i, got[fmt.Sprintf("%s %d", s, i)], w)
			}
		}
	}
	if r.code != exitSweepFailed {
		t.Errorf("-o json: exit %d, want %d", r.code, exitSweepFailed)
	}

	r = probe(probetest.Context(t), nil, "sweep", "--server", servers[0], "127.0.0.1:"+up)
	if r.code != exitOK || r.stderr != "probe: sweep: the probe connected (1 target, 1 server)\n" {
		t.Errorf("all connected: exit %d, stderr %q", r.code, r.stderr)
	}
	r = probe(probetest.Context(t), nil, "connect", "--server", servers[0], "--server", servers[1], "127.0.0.1", up)
	if r.code != exitUsage || !strings.HasPrefix(r.stderr, "probe: connect asks one probe server; several --server are for sweep") {
		t.Errorf("connect with two servers: exit %d, stderr %q", r.code, r.stderr)
	}
	r = probe(probetest.Context(t), nil, "sweep", "no-port")
	if r.code != exitUsage || !strings.HasPrefix(r.stderr, `probe: target "no-port": want HOST:PORT`) {
		t.Errorf("a bad target: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestConnectHandshake connects with a TLS handshake: the certificate's
// line, and the exit code of one that does not verify.
func TestConnectHandshake(t *testing.T) {
	t.Parallel()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, t.TempDir())
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "target", true)}, NextProtos: []string{"h2"}}
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, cfg)
		tc.Handshake()
		tc.Close()
	})

	r := probe(probetest.Context(t), nil, "connect", "--sni", "localhost", "--alpn", "h2", "--trust", caFile, "127.0.0.1", port(tg))
	want := []string{
		`^connected to 127\.0\.0\.1:\d+ from 127\.0\.0\.1:\d+ in \S+ \(total \S+\), rtt \S+$`,
		`^TLS 1\.3 TLS_\w+, ALPN h2 in \S+; verified for localhost$`,
		`^certificate CN=target for localhost 127\.0\.0\.1, issued by CN=netprobe test CA, expires in \d+ minutes \(\d{4}-\d\d-\d\d \d\d:\d\d UTC\), chain of 1$`,
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != exitOK || len(lines) != len(want) {
		t.Fatalf("exit %d, stdout\n%s\nstderr %q", r.code, r.stdout, r.stderr)
	}
	for i, re := range want {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %q", i, lines[i], re)
		}
	}

	r = probe(probetest.Context(t), nil, "connect", "--sni", "other.test", "--trust", caFile, "127.0.0.1", port(tg))
	wantErr := "probe: tls handshake 127.0.0.1:" + port(tg) + ": certificate is not for this name (stage TLS_HANDSHAKE, reason HOSTNAME_MISMATCH)\n"
	if r.code != exitCertificate || r.stderr != wantErr {
		t.Errorf("another name: exit %d, stderr %q; want %d, %q", r.code, r.stderr, exitCertificate, wantErr)
	}
}

// TestFetchHandshake fetches over TLS: the reply on stdout, the handshake
// among the events on stderr.
func TestFetchHandshake(t *testing.T) {
	t.Parallel()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, t.TempDir())
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "web", true)}}
	requests := make(chan string, 1)
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, cfg)
		req, err := probetest.ReadAll(tc)
		requests <- string(req)
		if err == nil {
			tc.Write([]byte("HTTP/1.0 200 OK\r\n\r\nhello\n"))
		}
		tc.Close()
	})
	r := probe(probetest.Context(t), nil, "fetch", "--sni", "localhost", "--trust", caFile, "127.0.0.1", port(tg), "/")
	if r.code != exitOK || r.stdout != "HTTP/1.0 200 OK\r\n\r\nhello\n" || !regexp.MustCompile(`(?m)^TLS 1\.3 \S+ in \S+; verified for localhost$`).MatchString(r.stderr) {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// The Host header names the TLS server name.
	if req := <-requests; req != "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n" {
		t.Errorf("the server read %q", req)
	}
}

// TestSweepTerminal runs probe sweep with its output on terminals: the
// matrix comes coloured, green where it connected and red where not, and a
// progress bar runs on stderr.
func TestSweepTerminal(t *testing.T) {
	t.Parallel()
	up := port(probetest.Listen(t, "127.0.0.1:0", nil))
	closed := closedPort(t, "tcp")
	control, term := openPTY(t)
	errControl, errTerm := openPTY(t)
	cmd := exec.CommandContext(probetest.Context(t), probeBin, "sweep", "127.0.0.1:"+up, "127.0.0.1:"+closed)
	cmd.Stdout, cmd.Stderr = term, errTerm
	cmd.Env = append(os.Environ(), "NO_COLOR=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child holds the terminals now; its exit ends their output.
	term.Close()
	errTerm.Close()
	errOut := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(errControl)
		errOut <- b
	}()
	out, _ := io.ReadAll(control) // ends with EIO once the child has exited
	cmd.Wait()
	stderr := strings.ReplaceAll(string(<-errOut), "\r\n", "\n")
	text := strings.ReplaceAll(string(out), "\r\n", "\n")
	// Every column starts where its header does, colours or not.
	visible := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(text, "")
	var starts []int
	for _, l := range strings.Split(strings.TrimSpace(visible), "\n") {
		starts = append(starts, regexp.MustCompile(`\S+\s+`).FindStringIndex(l)[1])
	}
	if len(starts) != 3 || starts[1] != starts[0] || starts[2] != starts[0] {
		t.Errorf("the second column starts at %v, want one place (%q)", starts, visible)
	}
	for _, want := range []string{
		"target           in-process\n",
		"127.0.0.1:" + up + "  \x1b[32mok ",
		"127.0.0.1:" + closed + "  \x1b[31mREFUSED\x1b[0m\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("terminal output %q lacks %q", text, want)
		}
	}
	// On a terminal, stderr shows a progress bar, cleared at the end.
	if cmd.ProcessState.ExitCode() != exitSweepFailed || !strings.Contains(stderr, "\r[####################] 2/2\r\x1b[K") ||
		!strings.HasSuffix(stderr, "probe: sweep: 1 of 2 probes failed (2 targets, 1 server)\n") {
		t.Errorf("exit %d, stderr %q", cmd.ProcessState.ExitCode(), stderr)
	}
}
