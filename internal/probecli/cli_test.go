package probecli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// probeIn runs the CLI as probe does, with stdin.
func probeIn(ctx context.Context, stdin string, args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, streams{in: strings.NewReader(stdin), out: &stdout, err: &stderr}, func(string) string { return "" })
	return result{code, stdout.String(), stderr.String()}
}

// TestAddressForms connects with every form of target people type, in
// both modes: HOST PORT, HOST:PORT, [IPV6]:PORT, [IPV6] PORT, a bare IPv6
// address and a service name.
func TestAddressForms(t *testing.T) {
	w := newWorld(t)
	v4 := port(probetest.Listen(t, "127.0.0.1:0", nil))
	v6 := port(probetest.Listen(t, "[::1]:0", nil))
	for _, mode := range w.modes() {
		t.Run(mode.name, func(t *testing.T) {
			for _, tc := range []struct {
				args []string
				code int
				want string // a regular expression for stdout, or stderr on failure
			}{
				{[]string{"127.0.0.1", v4}, exitOK, `connected to 127\.0\.0\.1:` + v4},
				{[]string{"127.0.0.1:" + v4}, exitOK, `connected to 127\.0\.0\.1:` + v4},
				{[]string{"[::1]:" + v6}, exitOK, `connected to \[::1\]:` + v6},
				{[]string{"[::1]", v6}, exitOK, `connected to \[::1\]:` + v6},
				{[]string{"::1", v6}, exitOK, `connected to \[::1\]:` + v6},
				// discard is port 9, where nothing listens: the name was
				// looked up, and the connection refused.
				{[]string{"127.0.0.1:discard"}, exitConnect, `connect 127\.0\.0\.1:9: connection refused`},
				{[]string{"[::1]", "discard"}, exitConnect, `connect \[::1\]:9: connection refused`},
			} {
				r := probe(probetest.Context(t), nil, append(append([]string{"connect"}, tc.args...), mode.flags...)...)
				out := r.stdout
				if tc.code != exitOK {
					out = r.stderr
				}
				if r.code != tc.code || !regexp.MustCompile(tc.want).MatchString(out) {
					t.Errorf("connect %v: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, r.code, r.stdout, r.stderr, tc.code, tc.want)
				}
			}
			// fetch takes the forms too, with a PATH after them.
			web := webServer(t)
			for _, args := range [][]string{{"127.0.0.1", web, "/"}, {"127.0.0.1:" + web, "/"}} {
				r := probe(probetest.Context(t), nil, append(append([]string{"fetch", "-q"}, args...), mode.flags...)...)
				if r.code != exitOK || !strings.HasSuffix(r.stdout, "\r\n\r\nhello\n") {
					t.Errorf("fetch %v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
				}
			}
		})
	}
}

// TestFetchRequestForms checks what fetch sends and how it ends: stdin
// when it is not a terminal, --keep-write-open, --fail-empty, and the
// payload cap, the same in both modes.
func TestFetchRequestForms(t *testing.T) {
	w := newWorld(t)
	echo := port(probetest.Listen(t, "127.0.0.1:0", probetest.Echo))
	// Answers only a client that has not half-closed: a reply after
	// EOF never comes.
	patient := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			c.Close()
			return
		}
		c.Write([]byte("you waited\n"))
		c.Close()
	}))
	silent := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		probetest.ReadAll(c)
		c.Close()
	}))
	for _, mode := range w.modes() {
		t.Run(mode.name, func(t *testing.T) {
			r := probeIn(probetest.Context(t), "PING\r\n", append([]string{"fetch", "-q", "127.0.0.1", echo}, mode.flags...)...)
			if r.code != exitOK || r.stdout != "PING\r\n" {
				t.Errorf("stdin: exit %d, stdout %q, stderr %q; want PING echoed", r.code, r.stdout, r.stderr)
			}
			r = probe(probetest.Context(t), nil, append([]string{"fetch", "-q", "--keep-write-open", "127.0.0.1", patient}, mode.flags...)...)
			if r.code != exitOK || r.stdout != "you waited\n" {
				t.Errorf("--keep-write-open: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			r = probe(probetest.Context(t), nil, append([]string{"fetch", "-q", "127.0.0.1", patient}, mode.flags...)...)
			if r.code != exitOK || r.stdout != "" {
				t.Errorf("without --keep-write-open: exit %d, stdout %q, stderr %q; want no reply", r.code, r.stdout, r.stderr)
			}
			r = probe(probetest.Context(t), nil, append([]string{"fetch", "-q", "--fail-empty", "127.0.0.1", silent}, mode.flags...)...)
			if r.code != exitEmpty || r.stderr != "probe: the target sent an empty reply (--fail-empty)\n" {
				t.Errorf("--fail-empty: exit %d, stderr %q; want %d", r.code, r.stderr, exitEmpty)
			}
			r = probe(probetest.Context(t), nil, append([]string{"fetch", "-q", "127.0.0.1", silent}, mode.flags...)...)
			if r.code != exitOK {
				t.Errorf("an empty reply without --fail-empty: exit %d, stderr %q", r.code, r.stderr)
			}
			big := strings.Repeat("x", 4<<20)
			r = probeIn(probetest.Context(t), big, append([]string{"fetch", "-q", "127.0.0.1", echo}, mode.flags...)...)
			want := "probe: the request is over the probe server's cap of 1048576 bytes (--max-payload-bytes, as probed's)\n"
			if r.code != exitUsage || !strings.HasPrefix(r.stderr, want) {
				t.Errorf("4 MB of stdin: exit %d, stderr %q; want %d, %q", r.code, r.stderr, exitUsage, want)
			}
		})
	}
}

// TestRepeat probes again and again: a line each, a summary like ping's,
// and the exit code of the last failure.
func TestRepeat(t *testing.T) {
	w := newWorld(t)
	up := port(probetest.Listen(t, "127.0.0.1:0", nil))
	closed := closedPort(t, "tcp")
	web := webServer(t)
	for _, mode := range w.modes() {
		t.Run(mode.name, func(t *testing.T) {
			r := probe(probetest.Context(t), nil, append([]string{"connect", "--count", "3", "--interval", "10ms", "127.0.0.1", up}, mode.flags...)...)
			want := `^probe 1: connected to 127\.0\.0\.1:\d+ in \S+\nprobe 2: .*\nprobe 3: .*\n--- 127\.0\.0\.1:\d+: 3 probes, 0 failed, 0% loss; time min/avg/max/mdev = \S+/\S+/\S+/\S+\n$`
			if r.code != exitOK || !regexp.MustCompile(want).MatchString(r.stdout) || r.stderr != "" {
				t.Errorf("connect up: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			r = probe(probetest.Context(t), nil, append([]string{"connect", "-c", "2", "-i", "10ms", "127.0.0.1:" + closed}, mode.flags...)...)
			want = `^probe 1: connect 127\.0\.0\.1:\d+: connection refused .*\nprobe 2: .*\n--- 127\.0\.0\.1:\d+: 2 probes, 2 failed, 100% loss\n$`
			if r.code != exitConnect || !regexp.MustCompile(want).MatchString(r.stdout) || !strings.HasPrefix(r.stderr, "probe: 2 of 2 probes failed, the last: connect ") {
				t.Errorf("connect closed: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			r = probe(probetest.Context(t), nil, append([]string{"fetch", "-c", "2", "-i", "10ms", "127.0.0.1", web, "/"}, mode.flags...)...)
			want = `^probe 1: \d+ bytes from 127\.0\.0\.1:\d+ in \S+ \(first byte at \S+\); the target closed\nprobe 2: .*\n--- 127\.0\.0\.1:\d+: 2 probes, 0 failed, 0% loss; time .*\n$`
			if r.code != exitOK || !regexp.MustCompile(want).MatchString(r.stdout) {
				t.Errorf("fetch: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}

	// --count 0 goes on until interrupted, then sums up.
	ctx, cancel := context.WithCancel(probetest.Context(t))
	accepted := make(chan struct{}, 100)
	counted := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		accepted <- struct{}{}
		c.Close()
	}))
	done := make(chan result, 1)
	go func() { done <- probe(ctx, nil, "connect", "-c", "0", "-i", "10ms", "127.0.0.1", counted) }()
	for range 3 {
		select {
		case <-accepted:
		case <-time.After(probetest.Timeout):
			t.Fatal("the repeated probe did not connect three times")
		}
	}
	cancel()
	r := <-done
	if r.code != exitOK || !regexp.MustCompile(`\n--- 127\.0\.0\.1:\d+: \d+ probes, 0 failed, 0% loss; time `).MatchString(r.stdout) {
		t.Errorf("interrupted --count 0: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestVerbose checks -v: every attempt and the phases, even for one
// address; --version keeps its long form.
func TestVerbose(t *testing.T) {
	t.Parallel()
	up := port(probetest.Listen(t, "127.0.0.1:0", nil))
	r := probe(probetest.Context(t), nil, "connect", "-v", "127.0.0.1", up)
	want := `^tried 127\.0\.0\.1:\d+ at \+\S+: connected after \S+\nconnected to .*, rtt \S+\ntcp: rtt \S+ \(var \S+, min \S+\), retransmits 0 \(0 in all\), lost 0, mss \d+/\d+, path mtu \d+, cwnd \d+, delivery rate \d+ B/s\nphases: resolve \S+, connect \S+, total \S+\n$`
	if r.code != exitOK || !regexp.MustCompile(want).MatchString(r.stdout) {
		t.Errorf("-v: exit %d, stdout %q", r.code, r.stdout)
	}
}

// TestProbeServerAnswers checks a --server that does not answer: one that
// accepts and stays silent is reported within --server-timeout, exit 69;
// a --server without a port is probed's port, 7070.
func TestProbeServerAnswers(t *testing.T) {
	t.Parallel()
	hung := probetest.Listen(t, "127.0.0.1:0", nil)
	start := time.Now()
	r := probe(probetest.Context(t), nil, "connect", "--server", hung.Addr(), "--server-timeout", "300ms", "--timeout", "1s", "127.0.0.1", "80")
	if r.code != exitUnavailable || r.stderr != "probe: probe server "+hung.Addr()+": Unavailable: no answer within --server-timeout 300ms\n" {
		t.Errorf("a hung server: exit %d, stderr %q", r.code, r.stderr)
	}
	if took := time.Since(start); took > probetest.Timeout/2 {
		t.Errorf("a hung server took %v to report", took)
	}
	for server, want := range map[string]string{
		"probed.internal":       "probed.internal:7070",
		"[2001:db8::1]":         "[2001:db8::1]:7070",
		"2001:db8::1":           "[2001:db8::1]:7070",
		"127.0.0.1:7071":        "127.0.0.1:7071",
		"unix:/run/probed.sock": "unix:/run/probed.sock",
		"dns:///probed:7070":    "dns:///probed:7070",
	} {
		if got := withDefaultPort(server); got != want {
			t.Errorf("--server %s: %s, want %s", server, got, want)
		}
	}
}

// TestSweepCLI checks sweep's ends: a sweep every server rejects is a usage
// error, said once; a server that cannot be asked gets a JSON line of its
// own; expanded rows keep the entry's name; an interrupted sweep prints
// every row, what is left as interrupted, and exits 130.
func TestSweepCLI(t *testing.T) {
	w := newWorld(t)
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--dns-server="+w.dns.Addr))
	up := port(probetest.Listen(t, "127.0.0.1:0", nil))

	r := probe(probetest.Context(t), nil, "sweep", "-s", w.probed, "-s", p.Addr, "127.0.0.1:"+up, "bad host:80")
	want := `probe: invalid request: targets[1].target.host: "bad host" is not an IP address or a valid DNS name: character ' ' is not allowed` + "\n"
	if r.code != exitUsage || r.stdout != "" || !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "invalid request") != 1 {
		t.Errorf("a rejected sweep: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	down := "127.0.0.1:" + closedPort(t, "tcp")
	r = probe(probetest.Context(t), nil, "sweep", "-o", "json", "-s", w.probed, "-s", down, "127.0.0.1:"+up)
	var sawError bool
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var line struct {
			Server string
			Error  *struct{ Code, Message string }
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if line.Server == down && line.Error != nil && line.Error.Code == "Unavailable" {
			sawError = true
		}
	}
	if r.code != exitSweepFailed || !sawError {
		t.Errorf("-o json with a server down: exit %d, stdout %q; want a line with its error", r.code, r.stdout)
	}

	w.dns.SetAddrs("two.test", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	r = probe(probetest.Context(t), nil, "sweep", "--expand", "--dns-server", w.dns.Addr, "two.test:"+up)
	for _, re := range []string{`(?m)^two\.test:\d+ -> 127\.0\.0\.1:\d+ +ok `, `(?m)^two\.test:\d+ -> 127\.0\.0\.2:\d+ +REFUSED$`} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("--expand: stdout %q lacks %q", r.stdout, re)
		}
	}

	// Interrupted while a probe waits on a port that drops SYNs.
	hole, release, err := probetest.Blackhole(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	// --deadline bounds the sweep, whatever the probes' timeout: what is
	// left then comes back abandoned (here in-process).
	r = probe(probetest.Context(t), nil, "sweep", "--deadline", "1s", "--timeout", "30s", "127.0.0.1:"+up, fmt.Sprintf("127.0.0.1:%d", hole))
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != exitSweepFailed || len(lines) != 3 || !strings.Contains(lines[1], " ok ") || !strings.HasSuffix(lines[2], " abandoned") {
		t.Errorf("--deadline: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	ctx, cancel := context.WithCancel(probetest.Context(t))
	done := make(chan result, 1)
	go func() {
		done <- probe(ctx, nil, "sweep", "-s", w.probed, "--timeout", "30s", "127.0.0.1:"+up, fmt.Sprintf("127.0.0.1:%d", hole))
	}()
	waitInFlight(t, w)
	cancel()
	r = <-done
	// The live target's row is ok, unless its result was still on its
	// way when the sweep was interrupted; the summary says which.
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	answered := 0
	if len(lines) == 3 && strings.Contains(lines[1], " ok ") {
		answered = 1
	}
	wantErr := fmt.Sprintf("probe: sweep: interrupted: %d of 2 probes answered, %d failed or left (2 targets, 1 server)\n", answered, 2-answered)
	if r.code != exitInterrupted || len(lines) != 3 || !strings.HasSuffix(lines[2], "interrupted") || r.stderr != wantErr {
		t.Errorf("interrupted: exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, wantErr)
	}
}

// waitInFlight waits until the world's probed runs a probe.
func waitInFlight(t *testing.T, w *world) {
	t.Helper()
	one := regexp.MustCompile(`(?m)^netprobe_probes_in_flight 1$`)
	probetest.Eventually(t, func() bool {
		req, err := http.NewRequestWithContext(probetest.Context(t), http.MethodGet, "http://"+w.metrics+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		return one.Match(body)
	}, func() string { return "the probe server never had a probe in flight" })
}

// TestCertificateLine checks the certificate's line: its names when it has
// any, nothing in their place when it has none.
func TestCertificateLine(t *testing.T) {
	for _, tc := range []struct {
		cert client.Certificate
		want string
	}{
		{client.Certificate{Subject: "CN=a", Issuer: "CN=ca", DNSNames: []string{"a.test"}, IPs: []string{"192.0.2.1"}}, "certificate CN=a for a.test 192.0.2.1, issued by CN=ca, "},
		{client.Certificate{Subject: "CN=b", Issuer: "CN=ca"}, "certificate CN=b, issued by CN=ca, "},
	} {
		var b bytes.Buffer
		printConnect(&b, "127.0.0.1", &client.ConnectResult{TLS: &client.TLSResult{Version: "TLS 1.3", Verified: true, Chain: []client.Certificate{tc.cert}}}, false)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%q lacks %q", b.String(), tc.want)
		}
	}
}

// TestEventLineOnTerminal runs fetch with stdout and stderr on terminals,
// to a target whose reply has no final newline: the event line starts on a
// line of its own.
func TestEventLineOnTerminal(t *testing.T) {
	t.Parallel()
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("no newline"))
		c.Close()
	})
	outControl, outTerm := openPTY(t)
	errControl, errTerm := openPTY(t)
	cmd := exec.CommandContext(probetest.Context(t), probeBin, "fetch", "127.0.0.1", port(tg))
	cmd.Stdout, cmd.Stderr = outTerm, errTerm
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outTerm.Close()
	errTerm.Close()
	errOut := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(errControl)
		errOut <- b
	}()
	out, _ := io.ReadAll(outControl) // EIO once the child has exited
	cmd.Wait()
	stderr := strings.ReplaceAll(string(<-errOut), "\r\n", "\n")
	if string(out) != "no newline" || !regexp.MustCompile(`\n\nsent 0 bytes, received 10`).MatchString(stderr) {
		t.Errorf("stdout %q, stderr %q; want the event line after a newline", out, stderr)
	}
}

// TestExitCodeTable checks docs/cli.md's table of exit codes against the
// one --help prints.
func TestExitCodeTable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(doc), "<!-- exit codes: checked by internal/probecli TestExitCodeTable -->\n")
	table, _, _ = strings.Cut(table, "<!-- end of exit codes -->")
	var want strings.Builder
	want.WriteString("| code | meaning |\n|---|---|\n")
	for _, e := range exitCodes {
		fmt.Fprintf(&want, "| %d | %s |\n", e.code, strings.ReplaceAll(e.text, "\n       ", " "))
	}
	if table != want.String() {
		t.Errorf("docs/cli.md's exit codes:\n%s\nwant, as --help has them:\n%s", table, want.String())
	}
}

// TestDialogueFlags runs fetch's dialogues in both modes: --starttls with
// a --send and an --expect after it, against an SMTP server made here; an
// --expect the target does not meet (exit 8); --tls-min above what the
// target speaks (exit 35); --source.
func TestDialogueFlags(t *testing.T) {
	w := newWorld(t)
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, t.TempDir())
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "localhost", true)}}
	smtp := smtpServer(t, cfg)
	only12 := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: cfg.Certificates, MaxVersion: tls.VersionTLS12})
		tc.Handshake()
		tc.Close()
	}))
	web := webServer(t)
	wrong := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("SSH-2.0-OpenSSH\r\n"))
		c.Close()
	}))
	for _, mode := range w.modes() {
		t.Run(mode.name, func(t *testing.T) {
			r := probe(probetest.Context(t), nil, append([]string{"fetch", "--starttls", "smtp", "--trust", caFile, "--sni", "localhost",
				"--send", `EHLO probe\r\n`, "--expect", "^250 ", "127.0.0.1", smtp}, mode.flags...)...)
			if r.code != exitOK || !strings.HasSuffix(r.stdout, "250 mail.test at your service\r\n") ||
				!regexp.MustCompile(`(?m)^TLS 1\.3 \S+ in \S+; verified for localhost$`).MatchString(r.stderr) ||
				!strings.Contains(r.stderr, "the last --expect matched") {
				t.Errorf("--starttls smtp: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			r = probe(probetest.Context(t), nil, append([]string{"fetch", "-q", "--expect", "^220 ", "127.0.0.1", wrong}, mode.flags...)...)
			if r.code != exitExpect || !strings.Contains(r.stderr, `no match for "^220 " before the peer closed; the last bytes received: "SSH-2.0-OpenSSH\r\n" (stage EXPECT, reason NO_MATCH, step 0)`) {
				t.Errorf("--expect unmet: exit %d, stderr %q", r.code, r.stderr)
			}
			r = probe(probetest.Context(t), nil, append([]string{"connect", "--tls-min", "1.3", "--trust", caFile, "--sni", "localhost", "127.0.0.1", only12}, mode.flags...)...)
			if r.code != exitTLS || !strings.Contains(r.stderr, "reason PROTOCOL_VERSION") {
				t.Errorf("--tls-min 1.3: exit %d, stderr %q", r.code, r.stderr)
			}
		})
	}
	// Source addresses are the user's to bind in-process; a probed takes
	// only those it allows.
	r := probe(probetest.Context(t), nil, "connect", "--source", "127.0.0.2", "127.0.0.1", web)
	if r.code != exitOK || !strings.Contains(r.stdout, "from 127.0.0.2:") {
		t.Errorf("--source in-process: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = probe(probetest.Context(t), nil, "connect", "--server", w.probed, "--source", "127.0.0.2", "127.0.0.1", web)
	if r.code != exitUsage || !strings.Contains(r.stderr, "target.source_address: 127.0.0.2 is not an address this server may bind") {
		t.Errorf("--source to a probed that allows none: exit %d, stderr %q", r.code, r.stderr)
	}
}

// smtpServer is an SMTP server on loopback that greets, answers EHLO,
// starts TLS with cfg on STARTTLS and answers one EHLO over it; it returns
// the port.
func smtpServer(t *testing.T, cfg *tls.Config) string {
	return port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		fmt.Fprint(c, "220 mail.test ESMTP\r\n")
		for _, want := range []string{"EHLO", "STARTTLS"} {
			if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, want) {
				c.Close()
				return
			}
			if want == "EHLO" {
				fmt.Fprint(c, "250-mail.test\r\n250 STARTTLS\r\n")
			}
		}
		fmt.Fprint(c, "220 go ahead\r\n")
		tc := tls.Server(c, cfg)
		tr := bufio.NewReader(tc)
		if l, _ := tr.ReadString('\n'); strings.HasPrefix(l, "EHLO") {
			fmt.Fprint(tc, "250 mail.test at your service\r\n")
		}
		probetest.ReadAll(tc)
		tc.Close()
	}))
}

// TestClientCertificate probes a target that requires a client
// certificate: in-process with --cert and --key, through a probed with
// --identity; without one, the target refuses (exit 35).
func TestClientCertificate(t *testing.T) {
	t.Parallel()
	serverCA, clientCA := probetest.NewCA(t), probetest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := probetest.WriteFiles(t, dir, clientCA.Issue(t, "cli", false))
	caFile := serverCA.WriteFile(t, dir)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(clientCA.PEM)
	cfg := &tls.Config{Certificates: []tls.Certificate{serverCA.Issue(t, "localhost", true)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	tg := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, cfg)
		tc.Handshake()
		tc.Close()
	}))
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--client-identity=ops="+certFile+","+keyFile, "--policy-file="+writePolicy(t, "identity ops\n")))
	tls := []string{"--trust", caFile, "--sni", "localhost"}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{append([]string{"connect", "--cert", certFile, "--key", keyFile, "127.0.0.1", tg}, tls...), exitOK},
		{append([]string{"connect", "--server", p.Addr, "--identity", "ops", "127.0.0.1", tg}, tls...), exitOK},
		{append([]string{"connect", "127.0.0.1", tg}, tls...), exitTLS},
		{append([]string{"connect", "--server", p.Addr, "--cert", certFile, "--key", keyFile, "127.0.0.1", tg}, tls...), exitUsage},
	} {
		r := probe(probetest.Context(t), nil, tc.args...)
		if r.code != tc.code {
			t.Errorf("probe %v: exit %d, stderr %q; want %d", tc.args, r.code, r.stderr, tc.code)
		}
	}
}

func writePolicy(t *testing.T, text string) string {
	path := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSweepDialogue sweeps with a banner check: a target that answers as
// expected is ok, one that answers something else NO_MATCH.
func TestSweepDialogue(t *testing.T) {
	t.Parallel()
	banner := func(b string) string {
		return port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			c.Write([]byte(b))
			c.Close()
		}))
	}
	ssh, web := banner("SSH-2.0-OpenSSH_9.2\r\n"), banner("HTTP/1.0 400 Bad Request\r\n\r\n")
	r := probe(probetest.Context(t), nil, "sweep", "--expect", "^SSH-2", "127.0.0.1:"+ssh, "127.0.0.1:"+web)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != exitSweepFailed || len(lines) != 3 || !strings.Contains(lines[1], " ok ") || !strings.HasSuffix(lines[2], " NO_MATCH") {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = probe(probetest.Context(t), nil, "sweep", "--send", "x", "127.0.0.1:"+ssh)
	if r.code != exitUsage || !strings.HasPrefix(r.stderr, "probe: a sweep's dialogue is a check: end it with an --expect") {
		t.Errorf("a sweep dialogue without an expect: exit %d, stderr %q", r.code, r.stderr)
	}
}
