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
// wants the client certificate "billing"; the trace and ICMP examples run on a
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
			env.run(t, doc, ex)
		}
	}
	if examples < 20 {
		t.Errorf("%d grpcurl examples found, want docs/api.md's 18 and README.md's 2", examples)
	}
}

// TestFleetDoc runs docs/fleet.md's grpcurl examples as TestAPIDocExamples
// runs api.md's, against the fleet they show (fleetExamples): Describe of
// n1, and a Sweep from all three nodes, n3 down. The fan-out's responses
// are matched one to one, in the order the API defines (see matches).
func TestFleetDoc(t *testing.T) {
	t.Parallel()
	const doc = "../../docs/fleet.md"
	text, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	examples := grpcurlExamples(string(text))
	if len(examples) != 2 {
		t.Errorf("%d grpcurl examples found in %s, want its Describe and its fan-out Sweep", len(examples), doc)
	}
	env := fleetExamples(t)
	for _, ex := range examples {
		env.run(t, doc, ex)
	}
}

// grpcurlExample is one grpcurl command of a doc and the output it shows
// (none for README.md's, which show only commands).
type grpcurlExample struct {
	command, output string
}

// exampleBlock starts a block of commands: ```sh (api.md's, README.md's)
// or ```console (fleet.md's; README.md's, of the CLI, holds no grpcurl).
var exampleBlock = regexp.MustCompile("```(sh|console)\n")

// grpcurlExamples returns the grpcurl commands of text's ```sh and
// ```console blocks: those after a "$ " prompt with the lines after them
// up to the next prompt as their output, and bare "grpcurl ..." lines with
// none. A command goes on while a line ends in a backslash or a single
// quote is open. Other commands ("$ probe ...") and their output are not
// grpcurl's: they are left out.
func grpcurlExamples(text string) []grpcurlExample {
	var out []grpcurlExample
	for _, part := range exampleBlock.Split(text, -1)[1:] {
		body, _, _ := strings.Cut(part, "```")
		lines := strings.SplitAfter(body, "\n")
		prompted := false // whether the last command was a grpcurl one after a prompt
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
			grpcurl := strings.HasPrefix(cmd, "grpcurl ")
			if grpcurl {
				out = append(out, grpcurlExample{command: strings.TrimSpace(cmd)})
			}
			prompted = prompt && grpcurl
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
	// addrs maps an IP address an example names, in an "ip:port", to the
	// one that serves it here.
	addrs map[string]string
	// command runs a program where the probed is.
	command func(name string, args ...string) *exec.Cmd
}

// requestPorts finds the ports a request names.
var requestPorts = regexp.MustCompile(`"port":\s*(\d+)`)

// args splits command as the shell would (single quotes, backslash and
// newline) and puts env's probed and ports in place of the example's.
func (env *exampleEnv) args(command string) ([]string, bool) {
	command = strings.ReplaceAll(command, "\\\n", " ")
	words, closed := probetest.ShellWords(command)
	if !closed || len(words) == 0 || words[0] != "grpcurl" {
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
	// addrPort finds the IP address and port of an "ip:port", or the port
	// of an "[ip]:port".
	addrPort = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+|\]):(\d+)\b`)
	// instance is the shape of Describe's instance, random per process.
	instance = regexp.MustCompile(`^[0-9a-f]{16}$`)
	// version is the shape of Describe's version, as buildinfo.Version
	// gives it: "(devel)" from a checkout, a module or stamped version,
	// each perhaps with a revision after it.
	version = regexp.MustCompile(`^(\(devel\)|unknown|v\d+\.\d+\.\d+\S*)( \S+)?$`)
)

// normalize drops from toks what varies from run to run: durations, the
// ports of addresses other than those the examples name, and Describe's
// instance and version, kept only by their shape; ports and addrs map
// each port and IP address served here to the one the examples name.
func normalize(toks []token, ports, addrs map[string]string) []token {
	port := func(p string) string {
		if q, ok := ports[p]; ok {
			return q
		}
		return "#"
	}
	out := slices.Clone(toks)
	// key is the name of the field whose value is out[i], or "".
	key := func(i int) string {
		if i >= 2 && out[i-2].quoted && out[i-1].text == ":" && !out[i-1].quoted {
			return out[i-2].text
		}
		return ""
	}
	for i, tk := range out {
		switch {
		case tk.quoted && duration.MatchString(tk.text):
			out[i].text = "#s"
		case tk.quoted && key(i) == "instance" && instance.MatchString(tk.text):
			out[i].text = "#instance"
		case tk.quoted && key(i) == "version" && version.MatchString(tk.text):
			out[i].text = "#version"
		case tk.quoted:
			out[i].text = addrPort.ReplaceAllStringFunc(tk.text, func(m string) string {
				sub := addrPort.FindStringSubmatch(m)
				ip := sub[1]
				if a, ok := addrs[ip]; ok {
					ip = a
				}
				return ip + ":" + port(sub[2])
			})
		case key(i) == "port":
			// A port field is a target's port, to be mapped, or a
			// service's, to be kept.
			if q, ok := ports[tk.text]; ok {
				out[i].text = q
			}
		}
	}
	return out
}

// run runs ex, an example of doc, in env, and reports where grpcurl's
// exit or output is not what ex shows.
func (env *exampleEnv) run(t *testing.T, doc string, ex grpcurlExample) {
	t.Helper()
	args, ok := env.args(ex.command)
	if !ok {
		t.Errorf("%s: %q is no grpcurl command this test can run", doc, ex.command)
		return
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

// matches reports whether grpcurl's output got is what the example want
// shows. A Sweep's responses come as they finish: the example's must be
// its responses one to one, in any order but the one the API defines
// (sentBefore).
func (env *exampleEnv) matches(got, want string, sweep bool) bool {
	portsFromReal, portsFromDoc := map[string]string{}, map[string]string{}
	for doc, real := range env.ports {
		portsFromReal[real], portsFromDoc[doc] = doc, doc
	}
	addrsFromReal := map[string]string{}
	for doc, real := range env.addrs {
		addrsFromReal[real] = doc
	}
	g, w := normalize(tokenize(got), portsFromReal, addrsFromReal), normalize(tokenize(want), portsFromDoc, nil)
	if !sweep {
		return matchTokens(g, w)
	}
	gs, ok := objects(g)
	ws, wok := objects(w)
	return ok && wok && matchResponses(gs, ws)
}

// matchTokens reports whether g, grpcurl's output, is what w, an
// example's, shows: the same tokens, where "..." in w stands for any
// balanced run of tokens and a string ending in "..." for any string with
// that beginning.
func matchTokens(g, w []token) bool {
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

// objects splits toks into its top-level objects; ok is false when a
// token stands outside them (a "..." for responses left out).
func objects(toks []token) (objs [][]token, ok bool) {
	depth, start := 0, 0
	for k, tk := range toks {
		if tk.quoted {
			if depth == 0 {
				return nil, false
			}
			continue
		}
		switch tk.text {
		case "{", "[":
			if depth == 0 && tk.text != "{" {
				return nil, false
			}
			depth++
		case "}", "]":
			depth--
			if depth == 0 {
				objs = append(objs, toks[start:k+1])
				start = k + 1
			}
		default:
			if depth == 0 {
				return nil, false
			}
		}
	}
	return objs, depth == 0 && start == len(toks)
}

// field is the tokens of the value of obj's top-level field key (obj the
// tokens of a JSON object), or nil when it has none.
func field(obj []token, key string) []token {
	depth, start := 0, -1
	for k, tk := range obj {
		if !tk.quoted {
			switch tk.text {
			case "{", "[":
				depth++
			case "}", "]":
				depth--
			}
		}
		switch {
		case start >= 0 && (depth == 0 || depth == 1 && !tk.quoted && tk.text == ","):
			return obj[start:k]
		case start < 0 && depth == 1 && tk.quoted && tk.text == key && k+1 < len(obj) && !obj[k+1].quoted && obj[k+1].text == ":":
			start = k + 2
		}
	}
	return nil
}

// sentBefore reports whether the API sends Sweep response a before b:
// the fanout summary after every other response, and a node's vantage
// error after that node's results. (Results come as they finish, and the
// nodes' interleave.)
func sentBefore(a, b []token) bool {
	switch {
	case field(b, "fanout") != nil:
		return field(a, "fanout") == nil
	case field(b, "vantageError") != nil:
		node := func(r []token) string {
			if n := field(field(r, "vantage"), "node"); len(n) == 1 {
				return n[0].text
			}
			return ""
		}
		return field(a, "vantageError") == nil && node(a) == node(b)
	}
	return false
}

// matchResponses reports whether the example's responses w are grpcurl's
// responses g one to one, each matching its own (matchTokens), with the
// API's order kept: in g, and in w wherever two shown responses are of an
// order the API defines.
func matchResponses(g, w [][]token) bool {
	if len(g) != len(w) {
		return false
	}
	for a := range g {
		for b := range a {
			if sentBefore(g[a], g[b]) {
				return false // the server broke the order
			}
		}
	}
	ok := make([][]bool, len(w))
	for i := range w {
		ok[i] = make([]bool, len(g))
		for k := range g {
			ok[i][k] = matchTokens(g[k], w[i])
		}
	}
	used := make([]bool, len(g))
	pick := make([]int, len(w)) // pick[i] is the response w[i] shows
	var assign func(i int) bool
	assign = func(i int) bool {
		if i == len(w) {
			return true
		}
		for k := range g {
			if used[k] || !ok[i][k] || slices.ContainsFunc(pick[:i], func(j int) bool { return sentBefore(g[k], g[j]) }) {
				continue
			}
			used[k], pick[i] = true, k
			if assign(i + 1) {
				return true
			}
			used[k] = false
		}
		return false
	}
	return assign(0)
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

// fleetExamples runs the fleet of docs/fleet.md's examples: nodes n1, n2
// and n3 labelled zone=z1, z0 and z1, at 127.0.0.71 to .73 for the doc's
// 10.0.0.11 to .13 and on one port for its 7070, found through a DNS
// server that names db.internal too, a listener on loopback for the doc's
// port 5432. n3 is stopped once every node has heard from every node, so
// that the fan-out's UNAVAILABLE is real; the examples ask n1.
func fleetExamples(t *testing.T) *exampleEnv {
	dns := dnstest.Start(t)
	db := probetest.Listen(t, "127.0.0.1:0", nil)
	dns.SetAddrs("db.internal", netip.MustParseAddr("127.0.0.1"))
	nodes := startFleetOn(t, dns, 3, 70, func(i int) []string { return []string{fmt.Sprintf("--label=zone=z%d", i%2)} })
	nodes[2].Stop()
	_, port, err := net.SplitHostPort(nodes[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	env := &exampleEnv{
		addr:    nodes[0].Addr,
		ports:   map[string]string{"5432": strconv.Itoa(int(db.Port())), "7070": port},
		addrs:   map[string]string{},
		command: exec.Command,
	}
	for i, nd := range nodes {
		env.addrs[fmt.Sprintf("10.0.0.%d", 11+i)] = nd.addr.String()
	}
	return env
}

// TestMatchResponses checks how a Sweep example's responses are held to
// grpcurl's: one to one, in any order but the API's.
func TestMatchResponses(t *testing.T) {
	const (
		a1    = `{"connect": {"port": 1}, "vantage": {"node": "a"}}`
		a2    = `{"connect": {"port": 2}, "vantage": {"node": "a"}}`
		b1    = `{"connect": {"port": 1}, "vantage": {"node": "b"}}`
		aErr  = `{"vantage": {"node": "a"}, "vantageError": {"code": "UNAVAILABLE"}}`
		bErr  = `{"vantage": {"node": "b"}, "vantageError": {"code": "UNAVAILABLE"}}`
		count = `{"fanout": {"asked": 2}}`
	)
	lines := func(rs ...string) string { return strings.Join(rs, "\n") + "\n" }
	env := &exampleEnv{}
	for _, tc := range []struct {
		name      string
		got, want string
		match     bool
	}{
		{"the same", lines(a1, b1, count), lines(a1, b1, count), true},
		{"nodes interleaved otherwise", lines(a1, b1, count), lines(b1, a1, count), true},
		{"a node's results in another order", lines(a2, a1, count), lines(a1, a2, count), true},
		{"another node's error before a result", lines(a1, bErr, count), lines(bErr, a1, count), true},
		{"elided", lines(a1, aErr), lines(`{"connect": {...}, "vantage": {"node": "a"}}`, `{"vantage": {...}, "vantageError": {"code": "..."}}`), true},
		{"the counts shown first", lines(a1, b1, count), lines(count, a1, b1), false},
		{"a node's error shown before its result", lines(a1, aErr, count), lines(aErr, a1, count), false},
		{"the server's counts not last", lines(a1, count, b1), lines(a1, b1, count), false},
		{"the server's error before its node's result", lines(aErr, a1), lines(a1, aErr), false},
		{"a response left out", lines(a1, b1, count), lines(a1, count), false},
		{"a response shown twice", lines(a1, b1, count), lines(a1, a1, count), false},
		{"a response too many", lines(a1, count), lines(a1, b1, count), false},
		{"responses elided as a whole", lines(a1, b1, count), lines(a1, "...", count), false},
		{"a different value", lines(a1, b1, count), lines(a1, b1, `{"fanout": {"asked": 3}}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := env.matches(tc.got, tc.want, true); got != tc.match {
				t.Errorf("matches(%s, %s) = %v, want %v", tc.got, tc.want, got, tc.match)
			}
		})
	}
}

// TestGrpcurlExamples checks which commands of a doc are taken as grpcurl
// examples, and which lines as their output.
func TestGrpcurlExamples(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []grpcurlExample
	}{
		{"sh, with a prompt", "```sh\n$ grpcurl a\n{\n}\n\n$ grpcurl b\nx\n```\n",
			[]grpcurlExample{{"grpcurl a", "{\n}\n\n"}, {"grpcurl b", "x\n"}}},
		{"sh, bare", "```sh\ngrpcurl a\ngrpcurl b\n```\n", []grpcurlExample{{"grpcurl a", ""}, {"grpcurl b", ""}}},
		{"console", "```console\n$ grpcurl -d '{\n  \"a\": 1}' \\\n    h m\nout\n```\n",
			[]grpcurlExample{{"grpcurl -d '{\n  \"a\": 1}' \\\n    h m", "out\n"}}},
		{"other commands and their output left out", "```console\n$ probe connect h\nconnected\n$ grpcurl a\nout\n$ printf 'x' | probe fetch h\nx\n```\n",
			[]grpcurlExample{{"grpcurl a", "out\n"}}},
		{"other blocks left out", "```yaml\n$ grpcurl a\n```\ntext\n$ grpcurl b\n```go\ngrpcurl c\n```\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := grpcurlExamples(tc.text); !slices.Equal(got, tc.want) {
				t.Errorf("%q\ngave %q\nwant %q", tc.text, got, tc.want)
			}
		})
	}
}

// chainExamples builds the trace and ICMP examples' network: a netlab chain
// of three routers from the probed's host to 198.18.4.1, which serves port
// 80, and whose port 443 r2 refuses (administratively prohibited); no UDP
// port is open (53 answers port unreachable). The probed runs as uid
// 65532 with no capability, as TestTrace's does, in a namespace whose
// ping_group_range lets it have ICMP datagram sockets.
func chainExamples(t *testing.T) *exampleEnv {
	c := netlab.NewChain(t, 3)
	c.Client.Sysctl(t, "net.ipv4.ping_group_range", "65532 65532")
	probetest.NewTarget(t, c.Target.Listen(t, netip.AddrPortFrom(c.Target.V4, 80).String()), func(conn net.Conn) { conn.Close() })
	c.Filter(t, 2, 443, netlab.Reject)
	p := startUnprivileged(t, c.Client)
	return &exampleEnv{addr: p.Addr, ports: map[string]string{"53": "53", "80": "80", "443": "443"}, command: c.Client.Command}
}
