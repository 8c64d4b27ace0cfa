package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestAPIDocExamples runs the grpcurl commands of docs/api.md's examples
// and README.md's, through the pinned grpcurl, against a probed started
// here (its address in place of localhost:7070), and checks what grpcurl
// prints against what the examples show. The targets they name are served
// for real: on loopback, 8000 by an HTTP server, 9 closed, 25 by an
// SMTP-like server (a 220 banner, one 250 to one line, then close), and
// _https._tcp.example.test by a DNS server whose SRV points to a listener;
// the source_address example runs on a LAN of namespaces where 192.0.2.1
// and 192.0.2.10 are real hosts and 192.0.2.10:443 a TLS 1.3 server that
// wants the client certificate "billing"; the trace examples run on a
// chain of namespaces, client - r1 - r2 - r3 - 198.18.4.1, from a probed
// with no privilege. (The file is Linux-only because
// the examples show Linux's tcp_info.) The output is compared token by
// token: the same keys, structure and values, except durations and the
// ports that vary from run to run; "..." in an example stands for any
// balanced run of tokens, and a string ending in "..." for any string
// with that beginning.
func TestAPIDocExamples(t *testing.T) {
	loop := loopbackExamples(t)
	var lan, chain *exampleEnv // made only when an example needs them
	examples := 0
	for _, doc := range []string{"../../docs/api.md", "../../README.md"} {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, ex := range grpcurlExamples(string(text)) {
			env := loop
			switch {
			case strings.Contains(ex.command, "192.0.2."):
				if lan == nil {
					lan = lanExamples(t)
				}
				env = lan
			case strings.Contains(ex.command, "198.18."):
				if chain == nil {
					chain = chainExamples(t)
				}
				env = chain
			}
			examples++
			args, ok := env.args(ex.command)
			if !ok {
				t.Errorf("%s: %q is no grpcurl command this test can run", doc, ex.command)
				continue
			}
			cmd := env.command(grpcurlBin, args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatalf("%s: $ %s: %v", doc, ex.command, err)
			}
			refused := strings.HasPrefix(ex.output, "ERROR:")
			got := out.String()
			switch {
			case refused != (err != nil):
				t.Errorf("%s: $ %s\nexited with %v; the example shows %s\nprinted\n%s", doc, ex.command, err, ex.output, got)
			case ex.output == "" && got == "":
				t.Errorf("%s: $ %s\nprinted nothing", doc, ex.command)
			case ex.output != "" && !env.matches(got, ex.output, strings.HasSuffix(ex.command, "/Sweep")):
				t.Errorf("%s: $ %s\nprinted\n%s\nbut the example shows\n%s", doc, ex.command, got, ex.output)
			}
		}
	}
	if examples < 15 {
		t.Errorf("%d grpcurl examples found, want docs/api.md's 13 and README.md's 2", examples)
	}
}

// grpcurlExample is one grpcurl command of a doc and the output it shows
// (none for README.md's, which show only commands).
type grpcurlExample struct {
	command, output string
}

// grpcurlExamples returns the grpcurl commands of text's ```sh blocks:
// those after a "$ " prompt with the lines after them up to the next
// prompt as their output, and bare "grpcurl ..." lines with none. A
// command goes on while a line ends in a backslash or a single quote is
// open.
func grpcurlExamples(text string) []grpcurlExample {
	var out []grpcurlExample
	for _, part := range strings.Split(text, "```sh\n")[1:] {
		body, _, _ := strings.Cut(part, "```")
		lines := strings.SplitAfter(body, "\n")
		prompted := false // whether the last command had a prompt
		for i := 0; i < len(lines); i++ {
			cmd, prompt := strings.CutPrefix(lines[i], "$ ")
			if !prompt && !strings.HasPrefix(cmd, "grpcurl ") {
				if prompted {
					out[len(out)-1].output += cmd
				}
				continue
			}
			for (strings.HasSuffix(cmd, "\\\n") || strings.Count(cmd, "'")%2 == 1) && i+1 < len(lines) {
				i++
				cmd += lines[i]
			}
			out = append(out, grpcurlExample{command: strings.TrimSpace(cmd)})
			prompted = prompt
		}
	}
	return out
}

// exampleEnv is where examples run: a probed, the ports the examples name
// and what serves each, and how a command is run there.
type exampleEnv struct {
	// addr is probed's address, for localhost:7070.
	addr string
	// ports maps a port an example names to the one that serves it here.
	ports map[string]string
	// command runs a program where the probed is.
	command func(name string, args ...string) *exec.Cmd
}

// requestPorts finds the ports a request names.
var requestPorts = regexp.MustCompile(`"port":\s*(\d+)`)

// args splits command as the shell would (single quotes, backslash and
// newline) and puts env's probed and ports in place of the example's.
func (env *exampleEnv) args(command string) ([]string, bool) {
	command = strings.ReplaceAll(command, "\\\n", " ")
	var words []string
	var word strings.Builder
	quoted, in := false, false
	for _, r := range command {
		switch {
		case r == '\'':
			quoted, in = !quoted, true
		case (r == ' ' || r == '\n') && !quoted:
			if in {
				words = append(words, word.String())
				word.Reset()
				in = false
			}
		default:
			word.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, word.String())
	}
	if quoted || len(words) == 0 || words[0] != "grpcurl" {
		return nil, false
	}
	args := words[1:]
	for i, a := range args {
		if a == "localhost:7070" {
			args[i] = env.addr
		}
		if i > 0 && args[i-1] == "-d" {
			args[i] = requestPorts.ReplaceAllStringFunc(a, func(m string) string {
				p := requestPorts.FindStringSubmatch(m)[1]
				if real, ok := env.ports[p]; ok {
					return `"port":` + real
				}
				return m
			})
		}
	}
	return args, true
}

// A token is a piece of grpcurl's output or an example's: a JSON string
// (decoded), one of {}[],: or a run of other non-space characters.
type token struct {
	text   string
	quoted bool
}

func tokenize(s string) []token {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\n' || c == '\r' || c == '\t':
			i++
		case strings.IndexByte("{}[],:", c) >= 0:
			out = append(out, token{text: s[i : i+1]})
			i++
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(s))
			var text string
			if json.Unmarshal([]byte(s[i:j]), &text) != nil {
				text = s[i:j]
			}
			out = append(out, token{text: text, quoted: true})
			i = j
		default:
			j := i
			for j < len(s) && strings.IndexByte(" \n\r\t{}[],:\"", s[j]) < 0 {
				j++
			}
			out = append(out, token{text: s[i:j]})
			i = j
		}
	}
	return out
}

var (
	duration = regexp.MustCompile(`^\d+(\.\d+)?s$`)
	// addrPort finds the port of an "ip:port" or "[ip]:port".
	addrPort = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+|\]):(\d+)\b`)
)

// normalize drops from toks what varies from run to run: durations, and
// the ports of addresses other than those the examples name; ports maps
// each port served here to the one the examples name.
func normalize(toks []token, ports map[string]string) []token {
	port := func(p string) string {
		if q, ok := ports[p]; ok {
			return q
		}
		return "#"
	}
	out := slices.Clone(toks)
	for i, tk := range out {
		switch {
		case tk.quoted && duration.MatchString(tk.text):
			out[i].text = "#s"
		case tk.quoted:
			out[i].text = addrPort.ReplaceAllStringFunc(tk.text, func(m string) string {
				sub := addrPort.FindStringSubmatch(m)
				return sub[1] + ":" + port(sub[2])
			})
		case i >= 2 && out[i-2].quoted && out[i-2].text == "port" && out[i-1].text == ":":
			// A port field is a target's port, to be mapped, or a
			// service's, to be kept.
			if q, ok := ports[tk.text]; ok {
				out[i].text = q
			}
		}
	}
	return out
}

// matches reports whether grpcurl's output got is what the example want
// shows. A Sweep's results come as they finish: they are put in the order
// of their index first, as the example lists them.
func (env *exampleEnv) matches(got, want string, sweep bool) bool {
	fromReal, fromDoc := map[string]string{}, map[string]string{}
	for doc, real := range env.ports {
		fromReal[real], fromDoc[doc] = doc, doc
	}
	g, w := normalize(tokenize(got), fromReal), normalize(tokenize(want), fromDoc)
	if sweep {
		g = byIndex(g)
	}
	type pos struct{ w, g int }
	memo := map[pos]bool{}
	var match func(i, j int) bool
	match = func(i, j int) bool {
		if r, ok := memo[pos{i, j}]; ok {
			return r
		}
		r := false
		switch {
		case i == len(w):
			r = j == len(g)
		case !w[i].quoted && w[i].text == "...":
			// Any balanced run of tokens, the empty one included.
			for k, depth := j, 0; k <= len(g) && depth >= 0 && !r; k++ {
				r = depth == 0 && match(i+1, k)
				if k < len(g) {
					switch g[k].text {
					case "{", "[":
						depth++
					case "}", "]":
						depth--
					}
				}
			}
		case j < len(g) && w[i].quoted == g[j].quoted:
			prefix, elided := strings.CutSuffix(w[i].text, "...")
			r = (g[j].text == w[i].text || w[i].quoted && elided && strings.HasPrefix(g[j].text, prefix)) && match(i+1, j+1)
		}
		memo[pos{i, j}] = r
		return r
	}
	return match(0, 0)
}

// byIndex orders the top-level objects of toks by their "index" (0 when
// absent, as proto3 JSON leaves it out).
func byIndex(toks []token) []token {
	type object struct {
		index int
		toks  []token
	}
	var objs []object
	depth, start := 0, 0
	for k, tk := range toks {
		switch tk.text {
		case "{", "[":
			depth++
		case "}", "]":
			depth--
			if depth == 0 {
				o := object{toks: toks[start : k+1]}
				for m := 1; m+2 < len(o.toks); m++ {
					if o.toks[m].quoted && o.toks[m].text == "index" {
						o.index, _ = strconv.Atoi(o.toks[m+2].text)
						break
					}
				}
				objs = append(objs, o)
				start = k + 1
			}
		}
	}
	if start != len(toks) {
		return toks
	}
	slices.SortStableFunc(objs, func(a, b object) int { return a.index - b.index })
	var out []token
	for _, o := range objs {
		out = append(out, o.toks...)
	}
	return out
}

// loopbackExamples serves the examples' loopback targets and a probed that
// reaches them.
func loopbackExamples(t *testing.T) *exampleEnv {
	dir := t.TempDir()
	// The services database the examples' answers come from, as Debian's
	// /etc/services has them.
	services := filepath.Join(dir, "services")
	if err := os.WriteFile(services, []byte("domain\t\t53/udp\nhttps\t\t443/tcp\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dns := dnstest.Start(t)
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--dns-server="+dns.Addr, "--services-file="+services))

	page := strings.Repeat("<p>netprobe serves this page to the examples.</p>\n", 20)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, page)
	}))
	t.Cleanup(web.Close)
	// A banner, one reply to one line, then close.
	smtp := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		defer c.Close()
		fmt.Fprint(c, "220 ready\r\n")
		if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			fmt.Fprint(c, "250 ok\r\n")
		}
	})
	www := probetest.Listen(t, "127.0.0.1:0", nil)
	dns.SetSRV("_https._tcp.example.test", dnstest.SRV{Target: "www.example.test", Port: uint16(www.Port())})
	dns.SetAddrs("www.example.test", netip.MustParseAddr("127.0.0.1"))
	return &exampleEnv{
		addr: p.Addr,
		ports: map[string]string{
			"8000": strconv.Itoa(web.Listener.Addr().(*net.TCPAddr).Port),
			"9":    strconv.Itoa(int(probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))),
			"25":   strconv.Itoa(int(smtp.Port())),
			"443":  strconv.Itoa(int(www.Port())),
		},
		command: exec.Command,
	}
}

// lanExamples builds the source_address example's network: a LAN where the
// probed's host has 192.0.2.1 besides its own address, and 192.0.2.10 is a
// TLS 1.3 server for api.internal (under a CA the probed's host trusts)
// that wants a client certificate, which the probed holds as "billing" and
// the policy lets anyone present.
func lanExamples(t *testing.T) *exampleEnv {
	lan := netlab.NewLAN(t)
	prober, server := lan.AddHost(t), lan.AddHost(t)
	prober.IP(t, "addr", "add", "192.0.2.1/24", "dev", "eth0")
	server.IP(t, "addr", "add", "192.0.2.10/24", "dev", "eth0")

	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, dir)
	cert, key := probetest.WriteFiles(t, dir, ca.Issue(t, "billing", false))
	policy := filepath.Join(dir, "policy")
	if err := os.WriteFile(policy, []byte("identity billing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsConfig := &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, "api.internal", true, func(c *x509.Certificate) {
			c.DNSNames, c.IPAddresses = []string{"api.internal"}, nil
		})},
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  ca.Pool,
	}
	probetest.NewTarget(t, server.Listen(t, "192.0.2.10:443"), func(c net.Conn) {
		tc := tls.Server(c, tlsConfig)
		if tc.Handshake() == nil {
			probetest.ReadAll(tc)
		}
		c.Close()
	})

	cmd := prober.Command(probedBin, "--listen=127.0.0.1:7070", "--allow-source=192.0.2.1",
		"--client-identity=billing="+cert+","+key, "--policy-file="+policy)
	// The CA of api.internal is among the host's trusted roots.
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+caFile)
	p := probetest.StartProbed(t, cmd)
	return &exampleEnv{addr: p.Addr, ports: map[string]string{"443": "443"}, command: prober.Command}
}

// chainExamples builds the trace examples' network: a netlab chain of three
// routers from the probed's host to 198.18.4.1, which serves port 80, and
// whose port 443 r2 refuses (administratively prohibited). The probed runs
// as uid 65532 with no capability, as TestTrace's does.
func chainExamples(t *testing.T) *exampleEnv {
	c := netlab.NewChain(t, 3)
	probetest.NewTarget(t, c.Target.Listen(t, netip.AddrPortFrom(c.Target.V4, 80).String()), func(conn net.Conn) { conn.Close() })
	c.Filter(t, 2, 443, netlab.Reject)
	p := startUnprivileged(t, c.Client)
	return &exampleEnv{addr: p.Addr, ports: map[string]string{"80": "80", "443": "443"}, command: c.Client.Command}
}
