package probecli

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/probetest"
)

// TestDocExamples runs the probe commands of README.md's and docs/cli.md's
// console examples, in-process, and checks what they print against what
// the examples show. The ports the examples name are served here: 8000 by
// an HTTP server saying hello, 6379 by a Redis answering PING, 2525 by an SMTP
// server with STARTTLS, 2526 by one that refuses it, and 8443 by a TLS
// server that wants a client certificate, whose CA is ca.pem (client.pem
// and client.key are a client certificate it trusts); the numbers that
// vary from run to run (times, ports, column widths) are not compared, and
// a line "..." stands for any lines, and a line ending in "..." any line
// that begins alike. The examples of a fleet (--from) run against one in
// TestDocFleetExamples, and those of a chain of routers (onChain) in
// TestDocTraceExamples.
func TestDocExamples(t *testing.T) {
	web := webServer(t)
	// Answers each PING as Redis does, until the client half-closes.
	redis := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				break
			}
			if l == "PING\r\n" {
				fmt.Fprint(c, "+PONG\r\n")
			}
		}
		c.Close()
	}))
	ca := probetest.NewCA(t)
	dir := t.TempDir()
	files := map[string]string{"ca.pem": ca.WriteFile(t, dir)}
	files["client.pem"], files["client.key"] = probetest.WriteFiles(t, dir, ca.Issue(t, "client", false))
	serverCert := []tls.Certificate{ca.Issue(t, "localhost", true)}
	smtp := smtpServer(t, &tls.Config{Certificates: serverCert})
	mtls := &tls.Config{Certificates: serverCert, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool}
	greeter := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, mtls)
		if tc.Handshake() == nil {
			fmt.Fprintf(tc, "hello %s\n", tc.ConnectionState().PeerCertificates[0].Subject.CommonName)
		}
		tc.Close()
	}))
	// Refuses STARTTLS, and waits for the client to leave.
	noTLS := port(probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		fmt.Fprint(c, "220 mail.test ESMTP\r\n")
		if l, _ := r.ReadString('\n'); strings.HasPrefix(l, "EHLO") {
			fmt.Fprint(c, "250-mail.test\r\n250 STARTTLS\r\n")
			if l, _ := r.ReadString('\n'); l == "STARTTLS\r\n" {
				fmt.Fprint(c, "454 4.7.0 TLS not available due to local problem\r\n")
				probetest.ReadAll(c)
			}
		}
		c.Close()
	}))
	ports := map[string]string{"8000": web, "6379": redis, "2525": smtp, "2526": noTLS, "8443": greeter}
	examples := 0
	for _, doc := range []string{"../../README.md", "../../docs/cli.md"} {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, block := range consoleBlocks(string(text)) {
			for _, ex := range block {
				stdin, args, ok := parseCommand(ex.command)
				if !ok {
					t.Errorf("%s: %q is no probe command this test can run", doc, ex.command)
					continue
				}
				if slices.Contains(args, "--from") || onChain(args) {
					continue
				}
				for i, a := range args {
					args[i] = withPorts(a, ports)
					if f, ok := files[a]; ok {
						args[i] = f
					}
				}
				examples++
				r := probeIn(probetest.Context(t), stdin, args...)
				if got, want := normalize(r.stdout+r.stderr), normalize(ex.output); !matches(got, want) {
					t.Errorf("%s: $ %s\nprinted\n%s\nwant\n%s", doc, ex.command, r.stdout+r.stderr, ex.output)
				}
			}
		}
	}
	if examples < 8 {
		t.Errorf("%d examples found, want every console example", examples)
	}
}

// chainAddrs are the addresses of the chain of routers the trace
// examples are run on (netlab.Chain's).
var chainAddrs = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("2001:db8::/32")}

// onChain reports whether an example's target is on the chain of
// TestDocTraceExamples.
func onChain(args []string) bool {
	for _, a := range args {
		host := a
		if h, _, err := net.SplitHostPort(a); err == nil {
			host = h
		}
		if ip, err := netip.ParseAddr(host); err == nil && slices.ContainsFunc(chainAddrs, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			return true
		}
	}
	return false
}

// example is one command of a console block and what it printed.
type example struct {
	command, output string
}

// consoleBlocks returns the examples of each ```console block of text.
func consoleBlocks(text string) [][]example {
	var out [][]example
	for _, part := range strings.Split(text, "```console\n")[1:] {
		body, _, _ := strings.Cut(part, "```")
		var block []example
		for _, line := range strings.SplitAfter(body, "\n") {
			if cmd, ok := strings.CutPrefix(line, "$ "); ok {
				block = append(block, example{command: strings.TrimSpace(cmd)})
			} else if len(block) > 0 {
				block[len(block)-1].output += line
			}
		}
		out = append(out, block)
	}
	return out
}

// parseCommand reads "probe ARGS" or "printf 'TEXT' | probe ARGS", with
// single quotes, into the CLI's arguments and its stdin.
func parseCommand(cmd string) (stdin string, args []string, ok bool) {
	if pipe, rest, found := strings.Cut(cmd, " | "); found {
		words, _ := probetest.ShellWords(pipe)
		if len(words) != 2 || words[0] != "printf" {
			return "", nil, false
		}
		s, err := strconv.Unquote(`"` + strings.ReplaceAll(words[1], `"`, `\"`) + `"`)
		if err != nil {
			return "", nil, false
		}
		stdin, cmd = s, rest
	}
	words, _ := probetest.ShellWords(cmd)
	if len(words) == 0 || words[0] != "probe" {
		return "", nil, false
	}
	return stdin, words[1:], true
}

// withPorts puts the served ports in place of the examples' ones, as a
// word or after a colon.
func withPorts(arg string, ports map[string]string) string {
	if p, ok := ports[arg]; ok {
		return p
	}
	if host, p, err := net.SplitHostPort(arg); err == nil {
		if real, ok := ports[p]; ok {
			return net.JoinHostPort(host, real)
		}
	}
	return arg
}

var (
	durations = regexp.MustCompile(`\d+(\.\d+)?(ns|µs|ms|s)\b`)
	portNums  = regexp.MustCompile(`:\d+\b`)
	spaces    = regexp.MustCompile(` +`)
	// Which services table answers depends on the machine's
	// /etc/services.
	tables = regexp.MustCompile(`from the (system|built-in) table`)
)

// normalize drops what varies from run to run or machine to machine:
// times, ports, the padding of columns and the services table.
func normalize(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = durations.ReplaceAllString(s, "#")
	s = portNums.ReplaceAllString(s, ":#")
	s = tables.ReplaceAllString(s, "from the # table")
	return spaces.ReplaceAllString(s, " ")
}

// matches reports whether got has want's lines, where a line "..." in
// want stands for any lines, and a line ending in "..." for any line that
// begins as it does.
func matches(got, want string) bool {
	g := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	w := strings.Split(strings.TrimSuffix(want, "\n"), "\n")
	for len(w) > 0 {
		if w[0] == "..." {
			w = w[1:]
			if len(w) == 0 {
				return true
			}
			for len(g) > 0 && !lineMatches(g[0], w[0]) {
				g = g[1:]
			}
			continue
		}
		if len(g) == 0 || !lineMatches(g[0], w[0]) {
			return false
		}
		g, w = g[1:], w[1:]
	}
	return len(g) == 0
}

// lineMatches reports whether got is the line want, or begins as want does
// before a "..." that ends it.
func lineMatches(got, want string) bool {
	if prefix, cut := strings.CutSuffix(want, "..."); cut && want != "..." {
		return strings.HasPrefix(got, prefix)
	}
	return got == want
}
