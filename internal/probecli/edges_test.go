package probecli

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
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
	"syscall"
	"testing"
	"time"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/spf13/pflag"
)

// The rough edges a new user found (issue 23), each run through the built
// binary.

// runBin runs the built probe with args, stdin (nil: /dev/null) and the
// environment variables env besides the test's own, and returns what it
// did.
func runBin(t *testing.T, stdin io.Reader, env []string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(probetest.Context(t), probeBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("probe %s: %v", strings.Join(args, " "), err)
	}
	return result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

// check reports a run that did not exit with code and print exactly
// stdout and stderr.
func (r result) check(t *testing.T, what string, code int, stdout, stderr string) {
	t.Helper()
	if r.code != code || r.stdout != stdout || r.stderr != stderr {
		t.Errorf("%s: exit %d, stdout %q, stderr\n%q\nwant exit %d, stdout %q, stderr\n%q", what, r.code, r.stdout, r.stderr, code, stdout, stderr)
	}
}

// TestRefusalsHaveNoUsageHint checks that a request the probe server
// refuses says why and exits as its code says, without sending the user to
// --help, which only a command line the CLI cannot run does.
func TestRefusalsHaveNoUsageHint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, dir, ca.Issue(t, "ops", false))
	// A client identity no caller is granted.
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--client-identity=ops="+certFile+","+keyFile))
	// One probe for each caller, ever.
	once := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--rate=1e-9", "--burst=1"))
	up := port(probetest.Listen(t, "127.0.0.1:0", nil))
	server := "NETPROBE_SERVER=" + p.Addr

	runBin(t, nil, []string{server}, "connect", "--timeout", "1m30s", "127.0.0.1", up).check(t, "INVALID_ARGUMENT", exitUsage, "",
		"probe: invalid request: timeout: 1m30s is over the server's maximum of 1m0s\nprobe: timeout is what --timeout sets\n")
	// In-process there is no server to hold identities: a usage error.
	runBin(t, nil, nil, "connect", "--identity", "ops", "127.0.0.1", up).check(t, "--identity without --server", exitUsage, "",
		"probe: --identity names a client identity of a --server's; without one, give the certificate itself: --cert FILE --key FILE\nRun \"probe connect --help\" for usage.\n")
	runBin(t, nil, []string{server}, "connect", "--identity", "ops", "127.0.0.1", up).check(t, "PERMISSION_DENIED", exitRejected, "",
		"probe: probe server "+p.Addr+": PermissionDenied: an anonymous caller may not present client identity ops (a policy line \"identity ops\" grants it to anyone)\n")
	if r := runBin(t, nil, []string{"NETPROBE_SERVER=" + once.Addr}, "connect", "127.0.0.1", up); r.code != exitOK {
		t.Fatalf("the one probe allowed: exit %d, stderr %q", r.code, r.stderr)
	}
	runBin(t, nil, []string{"NETPROBE_SERVER=" + once.Addr}, "connect", "127.0.0.1", up).check(t, "RESOURCE_EXHAUSTED", exitRejected, "",
		"probe: probe server "+once.Addr+": ResourceExhausted: peer 127.0.0.1 is over its rate of 1e-09 probes a second (burst 1)\n")
	// A command line the CLI cannot run still gets the hint.
	runBin(t, nil, []string{server}, "connect", "--frob", "127.0.0.1", up).check(t, "an unknown flag", exitUsage, "",
		"probe: unknown flag: --frob\nRun \"probe connect --help\" for usage.\n")
}

// TestNoStdin runs probe fetch -n in a shell loop that reads its list
// from stdin: each probe sends nothing and the loop keeps its list, where
// a probe reading stdin would send the rest of the list to the target and
// end the loop. -n with --data-file - is a usage error.
func TestNoStdin(t *testing.T) {
	t.Parallel()
	received := make(chan string, 10)
	tg := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("hello\n"))
		b, _ := probetest.ReadAll(c)
		received <- string(b)
		c.Close()
	}))
	list := filepath.Join(t.TempDir(), "list")
	if err := os.WriteFile(list, []byte("a.test\nb.test\nc.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `while read host; do "$PROBE" fetch -n -q 127.0.0.1 "$PORT"; echo "$host"; done < "$LIST"`
	cmd := exec.CommandContext(probetest.Context(t), "sh", "-c", script)
	cmd.Env = append(os.Environ(), "PROBE="+probeBin, "PORT="+tg, "LIST="+list)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if want := "hello\na.test\nhello\nb.test\nhello\nc.test\n"; err != nil || string(out) != want || stderr.Len() != 0 {
		t.Errorf("the loop: %v, stdout %q, stderr %q; want %q", err, out, stderr.String(), want)
	}
	for i := range 3 {
		select {
		case got := <-received:
			if got != "" {
				t.Errorf("probe %d sent %q, want nothing", i+1, got)
			}
		case <-time.After(probetest.Timeout):
			t.Fatalf("the target saw %d probes, want 3", i)
		}
	}

	runBin(t, strings.NewReader("x"), nil, "fetch", "-n", "--data-file", "-", "127.0.0.1", tg).check(t, "-n --data-file -", exitUsage, "",
		"probe: --data-file - reads the request from stdin, and -n says to read nothing from it: give one or the other\nRun \"probe fetch --help\" for usage.\n")
}

// TestMatrixWidths prints a matrix whose cells hold µs times: the columns
// line up on a terminal, where µ takes one column and two bytes.
func TestMatrixWidths(t *testing.T) {
	var out bytes.Buffer
	a := &app{streams: streams{out: &out}, getenv: func(string) string { return "" }}
	a.printMatrix([]vantage{{name: "probed-a:7070"}, {name: "b:7070"}}, []*row{
		{label: "db.internal:5432", cells: []cell{{text: "ok 95µs", ok: true}, {text: "ok 1.25ms", ok: true}}},
		{label: "10.0.0.1:22", cells: []cell{{text: "ok 999µs", ok: true}, {text: "REFUSED"}}},
		{label: "[2001:db8::5]:443", cells: []cell{{text: "TIMEOUT"}, {text: "ok 12µs", ok: true}}},
	})
	want := "" +
		"target             probed-a:7070  b:7070\n" +
		"db.internal:5432   ok 95µs        ok 1.25ms\n" +
		"10.0.0.1:22        ok 999µs       REFUSED\n" +
		"[2001:db8::5]:443  TIMEOUT        ok 12µs\n"
	if out.String() != want {
		t.Errorf("the matrix\n%s\nwant\n%s", out.String(), want)
	}
}

// TestSweepColumns sweeps from two probed processes with the built binary:
// each server's column starts where its header does, counted in the
// columns a terminal shows, whatever the times' units.
func TestSweepColumns(t *testing.T) {
	t.Parallel()
	var servers []string
	for range 2 {
		servers = append(servers, probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0")).Addr)
	}
	up := port(probetest.Listen(t, "127.0.0.1:0", nil))
	closed := closedPort(t, "tcp")
	r := runBin(t, nil, nil, "sweep", "-s", servers[0], "-s", servers[1], "127.0.0.1:"+up, "127.0.0.1:"+closed)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	want := []string{
		fmt.Sprintf(`^target +%s  %s$`, regexp.QuoteMeta(servers[0]), regexp.QuoteMeta(servers[1])),
		fmt.Sprintf(`^127\.0\.0\.1:%s  ok \S+ +ok \S+$`, up),
		fmt.Sprintf(`^127\.0\.0\.1:%s  REFUSED +REFUSED$`, closed),
	}
	if r.code != exitSweepFailed || len(lines) != len(want) || r.stderr != "probe: sweep: 2 of 4 probes failed (2 targets, 2 servers)\n" {
		t.Fatalf("exit %d, stdout\n%s\nstderr %q", r.code, r.stdout, r.stderr)
	}
	header := []rune(lines[0])
	second := len(header) - len(servers[1])
	for i, l := range lines {
		if !regexp.MustCompile(want[i]).MatchString(l) {
			t.Errorf("line %d %q does not match %q", i, l, want[i])
		}
		// The second server's column starts after two spaces, where its
		// header does.
		if rs := []rune(l); len(rs) <= second || rs[second-1] != ' ' || rs[second-2] != ' ' || rs[second] == ' ' {
			t.Errorf("line %d %q: the second server's column does not start at column %d, as in %q", i, l, second, lines[0])
		}
	}
}

// TestIPv6WithoutBrackets gives targets as people type them from a URL or
// a log: an IPv6 address, a colon and a port, without the brackets. The
// usage error says how to write it; what is an address without a port
// gets the usual words.
func TestIPv6WithoutBrackets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"connect", "::1:8000"}, `probe: target "::1:8000" has no port: an IPv6 address and a port are written [::1]:8000` + "\nRun \"probe connect --help\" for usage.\n"},
		{[]string{"connect", "fe80::1%eth0:22"}, `probe: target "fe80::1%eth0:22" has no port: an IPv6 address and a port are written [fe80::1%eth0]:22` + "\nRun \"probe connect --help\" for usage.\n"},
		{[]string{"fetch", "2001:db8::1:https", "/"}, `probe: target "2001:db8::1:https" has no port: an IPv6 address and a port are written [2001:db8::1]:https` + "\nRun \"probe fetch --help\" for usage.\n"},
		{[]string{"sweep", "127.0.0.1:80", "::1:8000"}, `probe: target "::1:8000": an IPv6 address and a port are written [::1]:8000` + "\nRun \"probe sweep --help\" for usage.\n"},
		// An address ending in hex digits is an address.
		{[]string{"connect", "::1:beef"}, `probe: target "::1:beef" has no port: give HOST PORT, or HOST:PORT ([IPv6]:PORT)` + "\nRun \"probe connect --help\" for usage.\n"},
		{[]string{"connect", "2001:db8::1"}, `probe: target "2001:db8::1" has no port: give HOST PORT, or HOST:PORT ([IPv6]:PORT)` + "\nRun \"probe connect --help\" for usage.\n"},
	} {
		runBin(t, nil, nil, tc.args...).check(t, strings.Join(tc.args, " "), exitUsage, "", tc.want)
	}
}

// TestResolvePortNumber asks resolve for a number where a service name
// goes: the usage error gives the command that looks a port up.
func TestResolvePortNumber(t *testing.T) {
	t.Parallel()
	runBin(t, nil, nil, "resolve", "53").check(t, "resolve 53", exitUsage, "",
		"probe: SERVICE \"53\" is a port number: to look port 53 up, run probe resolve --port 53\nRun \"probe resolve --help\" for usage.\n")
	runBin(t, nil, nil, "resolve", "53", "udp").check(t, "resolve 53 udp", exitUsage, "",
		"probe: SERVICE \"53\" is a port number: to look port 53 up, run probe resolve --port 53 udp\nRun \"probe resolve --help\" for usage.\n")
	runBin(t, nil, nil, "resolve", "0").check(t, "resolve 0", exitUsage, "",
		"probe: SERVICE \"0\" is a number, and out of the ports' range 1-65535\nRun \"probe resolve --help\" for usage.\n")
	// What it suggests works.
	if r := runBin(t, nil, nil, "resolve", "--port", "53", "udp"); r.code != exitOK || !regexp.MustCompile(`^domain 53/udp from the (system|built-in) table\n$`).MatchString(r.stdout) || r.stderr != "" {
		t.Errorf("resolve --port 53 udp: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestCertificateExpiry connects with the built binary to TLS servers
// whose certificates expired a day and two hours ago, or expire in three
// days and five hours: the certificate's line says so in words, never as
// a negative count of days left.
func TestCertificateExpiry(t *testing.T) {
	t.Parallel()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, t.TempDir())
	now := time.Now()
	for _, tc := range []struct {
		notAfter time.Time
		want     string
	}{
		{now.Add(-25 * time.Hour), "expired 1 day ago (" + now.Add(-25*time.Hour).UTC().Format("2006-01-02") + ")"},
		{now.Add(-150 * time.Minute), "expired 2 hours ago (" + now.Add(-150*time.Minute).UTC().Format("2006-01-02 15:04") + " UTC)"},
		{now.Add(330 * time.Minute), "expires in 5 hours (" + now.Add(330*time.Minute).UTC().Format("2006-01-02 15:04") + " UTC)"},
		{now.Add(73 * time.Hour), "expires in 3 days (" + now.Add(73*time.Hour).UTC().Format("2006-01-02") + ")"},
	} {
		cert := ca.Issue(t, "target", true, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(-72*time.Hour), tc.notAfter
		})
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
		tg := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			tc := tls.Server(c, cfg)
			tc.Handshake()
			tc.Close()
		}))
		r := runBin(t, nil, nil, "connect", "--inspect", "--trust", caFile, "--sni", "localhost", "127.0.0.1", tg)
		lines := strings.Split(r.stdout, "\n")
		want := "certificate CN=target for localhost 127.0.0.1, issued by CN=netprobe test CA, " + tc.want + ", chain of 1"
		if r.code != exitOK || len(lines) != 4 || lines[2] != want || r.stderr != "" {
			t.Errorf("exit %d, stdout\n%s\nstderr %q\nwant exit 0 and the third line\n%s", r.code, r.stdout, r.stderr, want)
		}
	}
}

// TestExpiry words the time to a certificate's end, or since it, at the
// edges of each unit.
func TestExpiry(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		left time.Duration
		want string
	}{
		{49 * time.Hour, "expires in 2 days (2025-01-03)"},
		{24 * time.Hour, "expires in 1 day (2025-01-02)"},
		{24*time.Hour - time.Second, "expires in 23 hours (2025-01-02 11:59 UTC)"},
		{time.Hour, "expires in 1 hour (2025-01-01 13:00 UTC)"},
		{59 * time.Minute, "expires in 59 minutes (2025-01-01 12:59 UTC)"},
		{30 * time.Second, "expires in less than a minute (2025-01-01 12:00 UTC)"},
		{0, "expired less than a minute ago (2025-01-01 12:00 UTC)"},
		{-time.Minute, "expired 1 minute ago (2025-01-01 11:59 UTC)"},
		{-25 * time.Hour, "expired 1 day ago (2024-12-31)"},
		{-400 * 24 * time.Hour, "expired 400 days ago (2023-11-28)"},
	} {
		if got := expiry(now.Add(tc.left), now); got != tc.want {
			t.Errorf("%v left: %q, want %q", tc.left, got, tc.want)
		}
	}
}

// TestFamilyMissing asks with -6 for a name that has only IPv4 addresses,
// and with -4 for one that has only IPv6, in-process and through probed,
// with the built binary and a DNS server on loopback: the error says the
// name lacks that family, where the resolver's "no such host" read as if
// it did not exist. A name that does not exist still says so.
func TestFamilyMissing(t *testing.T) {
	w := newWorld(t)
	w.dns.SetAddrs("v4only.test", netip.MustParseAddr("127.0.0.1"))
	w.dns.SetAddrs("v6only.test", netip.MustParseAddr("::1"))
	noAAAA := "probe: resolve v4only.test: v4only.test has no IPv6 address (AAAA), only IPv4 (A): -6 asks for IPv6 only (stage RESOLVE, reason NO_SUCH_HOST)\n"
	noA := "probe: resolve v6only.test: v6only.test has no IPv4 address (A), only IPv6 (AAAA): -4 asks for IPv4 only (stage RESOLVE, reason NO_SUCH_HOST)\n"
	for _, mode := range w.modes() {
		t.Run(mode.name, func(t *testing.T) {
			for _, tc := range []struct {
				args []string
				want string
			}{
				{[]string{"connect", "-6", "v4only.test", "80"}, noAAAA},
				{[]string{"connect", "-6", "v4only.test", "http"}, noAAAA},
				{[]string{"connect", "-4", "v6only.test:80"}, noA},
				{[]string{"fetch", "-q", "-n", "-6", "v4only.test", "80"}, noAAAA},
				{[]string{"connect", "-6", "nosuch.test", "80"}, "probe: resolve nosuch.test: no such host (stage RESOLVE, reason NO_SUCH_HOST)\n"},
			} {
				args := append(tc.args, mode.flags...)
				runBin(t, nil, nil, args...).check(t, strings.Join(args, " "), exitResolve, "", tc.want)
			}
		})
	}
}

// TestLocalToken asks, with --token and the built binary, a probed that
// requires tokens and serves plaintext on loopback, and one on a Unix
// socket, as probed does by default: the token goes without TLS and the
// call is answered as the in-process service answers it.
func TestLocalToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const token = "cli-0123456789abcdef"
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("cli "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "probed.sock")
	loopback := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--tokens-file="+tokens))
	probetest.StartProbed(t, exec.Command(probedBin, "--listen=unix:"+sock, "--tokens-file="+tokens))
	want := runBin(t, nil, nil, "resolve", "https")
	if want.code != exitOK || want.stdout == "" {
		t.Fatalf("in-process: exit %d, stderr %q", want.code, want.stderr)
	}
	for _, server := range []string{loopback.Addr, "unix:" + sock} {
		runBin(t, nil, nil, "--server", server, "--token", token, "resolve", "https").check(t, server+" with the token", exitOK, want.stdout, "")
		runBin(t, nil, []string{"NETPROBE_TOKEN=" + token}, "--server", server, "resolve", "https").check(t, server+" with NETPROBE_TOKEN", exitOK, want.stdout, "")
		if r := runBin(t, nil, nil, "--server", server, "resolve", "https"); r.code != exitRejected || !strings.HasPrefix(r.stderr, "probe: probe server "+server+": Unauthenticated: ") {
			t.Errorf("%s without the token: exit %d, stderr %q", server, r.code, r.stderr)
		}
	}
	// sweep judges each server on its own.
	up := "127.0.0.1:" + port(probetest.Listen(t, "127.0.0.1:0", nil))
	if r := runBin(t, nil, nil, "sweep", "-s", loopback.Addr, "-s", "unix:"+sock, "--token", token, up); r.code != exitOK || r.stderr != "probe: sweep: all 2 probes connected (1 target, 2 servers)\n" {
		t.Errorf("sweep with the token: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestLocalServer checks which --server a token goes to without TLS: a
// Unix socket, a loopback address, localhost; nothing else.
func TestLocalServer(t *testing.T) {
	for server, want := range map[string]bool{
		"unix:/run/probed.sock":      true,
		"127.0.0.1:7070":             true,
		"127.1.2.3:7070":             true,
		"[::1]:7070":                 true,
		"localhost:7070":             true,
		"probed.internal:7070":       false,
		"10.0.0.1:7070":              false,
		"[2001:db8::1]:7070":         false,
		"127.0.0.1.example.com:7070": false,
		"localhost.example.com:7070": false,
		"dns:///localhost:7070":      false,
		"[::ffff:127.0.0.1]:7070":    false,
		"127.0.0.1":                  false,
	} {
		if got := localServer(server); got != want {
			t.Errorf("localServer(%q) = %v, want %v", server, got, want)
		}
	}
}

// TestStartTLSRefused runs probe fetch and probe sweep --starttls with the
// built binary, in both modes, against servers on loopback that refuse and
// then keep the connection open: the fetch fails at once (exit 8, stage
// EXPECT, NO_MATCH) quoting the refusal, long before its 30 s timeout
// (which the test's 10 s would not wait for), with what the server said on
// stdout; the sweep's cells are NO_MATCH, as soon.
func TestStartTLSRefused(t *testing.T) {
	w := newWorld(t)
	hold := func(say func(c net.Conn, r *bufio.Reader) bool) string {
		return port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			c.SetDeadline(time.Now().Add(probetest.Timeout))
			if say(c, bufio.NewReader(c)) {
				probetest.ReadAll(c)
			}
			c.Close()
		}))
	}
	smtp := hold(func(c net.Conn, r *bufio.Reader) bool {
		fmt.Fprint(c, "220 mail.test ESMTP\r\n")
		if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "EHLO ") {
			return false
		}
		fmt.Fprint(c, "250-mail.test\r\n250 STARTTLS\r\n")
		if l, _ := r.ReadString('\n'); l != "STARTTLS\r\n" {
			return false
		}
		_, err := fmt.Fprint(c, "454 4.7.0 TLS not available due to local problem\r\n")
		return err == nil
	})
	pop3 := hold(func(c net.Conn, _ *bufio.Reader) bool {
		_, err := fmt.Fprint(c, "-ERR [SYS/TEMP] too many connections\r\n")
		return err == nil
	})
	busy := hold(func(c net.Conn, _ *bufio.Reader) bool {
		_, err := fmt.Fprint(c, "421 4.3.2 Too many connections, try later\r\n")
		return err == nil
	})
	for _, mode := range w.modes() {
		t.Run(mode.name, func(t *testing.T) {
			args := append([]string{"fetch", "-q", "--timeout", "30s", "--starttls", "smtp", "127.0.0.1", smtp}, mode.flags...)
			runBin(t, nil, nil, args...).check(t, "SMTP STARTTLS refused", exitExpect,
				"220 mail.test ESMTP\r\n250-mail.test\r\n250 STARTTLS\r\n454 4.7.0 TLS not available due to local problem\r\n",
				`probe: expect 127.0.0.1:`+smtp+`: no match for "^220 ": the target refused with "454 4.7.0 TLS not available due to local problem\r\n" (stage EXPECT, reason NO_MATCH, step 4)`+"\n")
			args = append([]string{"fetch", "-q", "--timeout", "30s", "--starttls", "pop3", "127.0.0.1", pop3}, mode.flags...)
			runBin(t, nil, nil, args...).check(t, "POP3 greeting refused", exitExpect,
				"-ERR [SYS/TEMP] too many connections\r\n",
				`probe: expect 127.0.0.1:`+pop3+`: no match for "^\\+OK": the target refused with "-ERR [SYS/TEMP] too many connections\r\n" (stage EXPECT, reason NO_MATCH, step 0)`+"\n")
			// Again and again, each probe fails so.
			args = append([]string{"fetch", "-c", "2", "-i", "10ms", "--timeout", "30s", "--starttls", "pop3", "127.0.0.1", pop3}, mode.flags...)
			line := `expect 127.0.0.1:` + pop3 + `: no match for "^\\+OK": the target refused with "-ERR [SYS/TEMP] too many connections\r\n" (stage EXPECT, reason NO_MATCH, step 0)`
			runBin(t, nil, nil, args...).check(t, "--count 2", exitExpect,
				"probe 1: "+line+"\nprobe 2: "+line+"\n--- 127.0.0.1:"+pop3+": 2 probes, 2 failed, 100% loss\n",
				"probe: 2 of 2 probes failed, the last: "+line+"\n")
			// A sweep: refused at STARTTLS, and at the greeting.
			server := "in-process"
			if mode.name == "probed" {
				server = w.probed
			}
			at := []string{"127.0.0.1:" + smtp, "127.0.0.1:" + busy}
			args = append([]string{"sweep", "--timeout", "30s", "--starttls", "smtp", "--send", `EHLO probe\r\n`, "--expect", "^250 ", at[0], at[1]}, mode.flags...)
			width := max(len(at[0]), len(at[1]))
			runBin(t, nil, nil, args...).check(t, "sweep --starttls smtp", exitSweepFailed,
				fmt.Sprintf("%-*s  %s\n%-*s  NO_MATCH\n%-*s  NO_MATCH\n", width, "target", server, width, at[0], width, at[1]),
				"probe: sweep: 2 of 2 probes failed (2 targets, 1 server)\n")
		})
	}
}

// TestServerShutdownExit runs probe fetch with the built binary through a
// probed that is told to stop (SIGTERM, a grace of 300 ms) while the
// fetch reads: the fetch is cut short, and probe says so and exits 69, as
// for a probe server that cannot answer.
func TestServerShutdownExit(t *testing.T) {
	t.Parallel()
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Write([]byte("first\n")) })
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--shutdown-grace=300ms"))
	cmd := exec.CommandContext(probetest.Context(t), probeBin, "fetch", "-q", "--server", p.Addr, "--keep-write-open", "--timeout", "30s", tg.Addr())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The reply has begun: the fetch is running.
	first := make([]byte, len("first\n"))
	if _, err := io.ReadFull(stdout, first); err != nil || string(first) != "first\n" {
		t.Fatalf("stdout began %q, %v", first, err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stdout)
	cmd.Wait()
	want := "probe: receive " + tg.Addr() + ": cut short: the probe server is shutting down (stage RECEIVE, reason SERVER_SHUTDOWN)\n"
	result{cmd.ProcessState.ExitCode(), string(first) + string(rest), stderr.String()}.check(t, "a fetch cut by a shutdown", exitUnavailable, "first\n", want)
}

// TestServerTLSMismatch asks a probed that serves TLS without TLS, and one
// that wants a client certificate without one: gRPC says only that the
// server did not answer; the CLI says which, and what to give.
func TestServerTLSMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, dir)
	certFile, keyFile := probetest.WriteFiles(t, dir, ca.Issue(t, "localhost", true))
	const token = "cli-0123456789abcdef"
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("cli "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsTokens := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--tls-cert="+certFile, "--tls-key="+keyFile, "--tokens-file="+tokens))
	mtls := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--tls-cert="+certFile, "--tls-key="+keyFile, "--tls-client-ca="+caFile))
	for _, args := range [][]string{
		{"--server", tlsTokens.Addr, "--token", token, "resolve", "https"},
		{"--server", tlsTokens.Addr, "health"},
	} {
		runBin(t, nil, nil, args...).check(t, strings.Join(args, " "), exitUnavailable, "",
			"probe: probe server "+tlsTokens.Addr+" serves TLS, and this was plaintext: give --tls, and --ca-file when its certificate is not signed by a CA this machine trusts\n")
	}
	for _, args := range [][]string{
		{"--server", mtls.Addr, "--ca-file", caFile, "resolve", "https"},
		{"--server", mtls.Addr, "--ca-file", caFile, "health"},
	} {
		runBin(t, nil, nil, args...).check(t, strings.Join(args, " "), exitRejected, "",
			"probe: probe server "+mtls.Addr+" requires a client certificate: give --cert-file and --key-file\n")
	}
	// With what it asks for, each answers.
	runBin(t, nil, nil, "--server", tlsTokens.Addr, "--ca-file", caFile, "--token", token, "health").check(t, "TLS and the token", exitOK, "SERVING\n", "")
}

// TestSweepServerDown asks a probe server that is down: sweep says so as
// the other commands do.
func TestSweepServerDown(t *testing.T) {
	t.Parallel()
	down := "127.0.0.1:" + closedPort(t, "tcp")
	up := "127.0.0.1:" + port(probetest.Listen(t, "127.0.0.1:0", nil))
	r := runBin(t, nil, nil, "sweep", "-s", down, up)
	want := "probe: probe server " + down + ": Unavailable: connection error: desc = \"transport: Error while dialing: dial tcp " + down + ": connect: connection refused\"\n" +
		"probe: sweep: 1 of 1 probe failed (1 target, 1 server)\n"
	if r.code != exitSweepFailed || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want %d, %q", r.code, r.stderr, exitSweepFailed, want)
	}
	if direct := runBin(t, nil, nil, "--server", down, "connect", up); !strings.HasPrefix(want, direct.stderr) {
		t.Errorf("connect says %q, sweep %q", direct.stderr, want)
	}
}

// TestPlurals checks the CLI's counts of one: "1 byte", "1 retransmit",
// never "1 bytes".
func TestPlurals(t *testing.T) {
	t.Parallel()
	var summary strings.Builder
	printSummary(&summary, &client.FetchSummary{BytesSent: 1, BytesReceived: 1, EndReason: client.EndEOF, TotalDuration: time.Millisecond,
		TCPInfo: &client.TCPInfo{RTT: time.Millisecond, TotalRetransmits: 1}})
	for _, tc := range []struct{ got, want string }{
		{summary.String(), "sent 1 byte, received 1; the target closed after 1ms, rtt 1ms, 1 retransmit\n"},
		{rtt(&client.TCPInfo{RTT: time.Millisecond, TotalRetransmits: 2}), ", rtt 1ms, 2 retransmits"},
		{plural(uint64(1), "byte"), "1 byte"},
		{plural(0, "node"), "0 nodes"},
	} {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
}

// TestHelpDefaultsOnce checks every flag of every command for a default
// said twice, as --deadline's was: "(default: none, ...) (default 0s)".
func TestHelpDefaultsOnce(t *testing.T) {
	t.Parallel()
	root := (&app{getenv: func(string) string { return "" }}).rootCommand()
	for _, cmd := range append(root.Commands(), root) {
		flags := pflag.NewFlagSet(cmd.Name(), pflag.ContinueOnError)
		flags.AddFlagSet(cmd.Flags())
		flags.AddFlagSet(cmd.PersistentFlags())
		flags.VisitAll(func(f *pflag.Flag) {
			fs := pflag.NewFlagSet(cmd.Name(), pflag.ContinueOnError)
			fs.AddFlag(f)
			if usage := fs.FlagUsages(); strings.Count(usage, "(default") > 1 {
				t.Errorf("%s: a default said twice:\n%s", cmd.CommandPath(), usage)
			}
		})
	}
}
