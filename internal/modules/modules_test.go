package modules_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestExampleFiles loads blackbox_exporter's own example files unchanged:
// their tcp and icmp modules are netprobe's, the others are listed as not
// run.
func TestExampleFiles(t *testing.T) {
	for _, tc := range []struct {
		file     string
		run      []string
		skipped  map[string]string
		warnings int
	}{
		{
			file: "testdata/blackbox.yml",
			run:  []string{"icmp", "icmp_ttl5", "irc_banner", "pop3s_banner", "postgresql", "ssh_banner", "ssh_banner_extract", "tcp_connect"},
			skipped: map[string]string{"http_2xx": "http", "http_post_2xx": "http", "grpc": "grpc", "grpc_plain": "grpc",
				"websocket": "websocket", "http_3xx": "http"},
			warnings: 6,
		},
		{
			file: "testdata/example.yml",
			run:  []string{"icmp_example", "imap_starttls", "irc_banner_example", "postgresql", "rabbitmq", "rabbitmq_insecure", "smtp_starttls", "tcp_connect_example", "tls_connect"},
			// Its 18 modules of other probers, and the two rabbitmq
			// modules' CA file, which this machine does not have.
			warnings: 20,
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			set, warnings, err := modules.Load(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if got := set.Names(); !slices.Equal(got, tc.run) {
				t.Errorf("modules run %q, want %q", got, tc.run)
			}
			if tc.skipped != nil && !cmp.Equal(set.Skipped, tc.skipped) {
				t.Errorf("skipped %v, want %v", set.Skipped, tc.skipped)
			}
			if len(warnings) != tc.warnings {
				t.Errorf("%d warnings, want %d:\n%s", len(warnings), tc.warnings, strings.Join(warnings, "\n"))
			}
		})
	}
	set, _, err := modules.Load("testdata/example.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Modules["rabbitmq"].Err; err == nil || !strings.Contains(err.Error(), "module rabbitmq, line 166: ") || !os.IsNotExist(errorsUnwrap(err)) {
		t.Errorf("rabbitmq's missing CA file: %v", err)
	}
}

func errorsUnwrap(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func send(b string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_Send{Send: []byte(b)}}
}

func template(s string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_SendTemplate{SendTemplate: s}}
}

func expect(re string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: re}}
}

func expectLine(re string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_ExpectLine{ExpectLine: re}}
}

var startTLS = &netprobev1.Step{Action: &netprobev1.Step_StartTls{StartTls: true}}

// TestOptions loads a module with each option of the tcp prober, and of
// netprobe's section, and checks the probe it makes.
func TestOptions(t *testing.T) {
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	ca.WriteFile(t, dir)
	certFile, keyFile := probetest.WriteFiles(t, dir, ca.Issue(t, "prober", false))
	target := &netprobev1.Target{Host: "mail.test", Port: 25}
	for _, tc := range []struct {
		name, yaml string
		connect    *netprobev1.ConnectRequest
		fetch      *netprobev1.FetchRequest
		cert       bool
	}{
		{
			name:    "defaults",
			yaml:    "prober: tcp",
			connect: &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "mail.test", Port: 25, IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6}},
		},
		{
			name: "ip4 with fallback, source address, timeout",
			yaml: "prober: tcp\ntimeout: 3s\ntcp:\n  preferred_ip_protocol: ip4\n  source_ip_address: 198.18.0.1",
			connect: &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "mail.test", Port: 25,
				IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV4, SourceAddress: "198.18.0.1"}},
		},
		{
			name:    "ip4 without fallback",
			yaml:    "prober: tcp\ntcp:\n  preferred_ip_protocol: ip4\n  ip_protocol_fallback: false",
			connect: &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "mail.test", Port: 25, IpFamily: netprobev1.IpFamily_IP_FAMILY_IPV4}},
		},
		{
			name:    "ip6 without fallback",
			yaml:    "prober: tcp\ntcp:\n  preferred_ip_protocol: ip6\n  ip_protocol_fallback: false",
			connect: &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "mail.test", Port: 25, IpFamily: netprobev1.IpFamily_IP_FAMILY_IPV6}},
		},
		{
			name: "tls with every tls_config key, alpn and reverse lookup",
			yaml: `prober: tcp
tcp:
  tls: true
  tls_config:
    ca_file: ca.pem
    cert_file: ` + certFile + `
    key_file: ` + keyFile + `
    server_name: mail.test
    insecure_skip_verify: true
    min_version: TLS12
    max_version: TLS13
netprobe:
  alpn: [smtp]
  reverse_lookup: true`,
			connect: &netprobev1.ConnectRequest{
				Target: &netprobev1.Target{Host: "mail.test", Port: 25, IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6},
				Tls: &netprobev1.TlsOptions{ServerName: "mail.test", InsecureSkipVerify: true, CaBundle: ca.PEM, Alpn: []string{"smtp"},
					MinVersion: netprobev1.TlsVersion_TLS_VERSION_1_2, MaxVersion: netprobev1.TlsVersion_TLS_VERSION_1_3, ClientIdentity: "module/m"},
				ReverseLookup: true,
			},
			cert: true,
		},
		{
			name: "query_response: expect, send, expect with send, expect_bytes, starttls",
			yaml: `prober: tcp
tcp:
  query_response:
  - expect: "^220 ([^ ]+)"
  - send: "EHLO prober\r"
  - expect: "^250-(STARTTLS)"
    send: "STARTTLS ${1}\r"
  - expect_bytes: "2.0"
  - send_bytes: !!binary AAAACATSFi8=
  - starttls: true
netprobe:
  read_timeout: 2s
  max_bytes: 4096`,
			fetch: &netprobev1.FetchRequest{
				Target: &netprobev1.Target{Host: "mail.test", Port: 25, IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6},
				Tls:    &netprobev1.TlsOptions{},
				Steps: []*netprobev1.Step{expectLine("^220 ([^ ]+)"), send("EHLO prober\r\n"), expectLine("^250-(STARTTLS)"), template("STARTTLS ${1}\r\n"),
					expect(`\A2\.0`), send("\x00\x00\x00\x08\x04\xd2\x16\x2f"), startTLS, expect("")},
				MaxBytes: 4096,
			},
		},
		{
			name: "tls and a banner: TLS first",
			yaml: "prober: tcp\ntcp:\n  tls: true\n  query_response:\n  - expect: \"^+OK\"",
			fetch: &netprobev1.FetchRequest{
				Target: &netprobev1.Target{Host: "mail.test", Port: 25, IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6},
				Tls:    &netprobev1.TlsOptions{},
				Steps:  []*netprobev1.Step{startTLS, expectLine("^+OK")},
			},
		},
		{
			name:    "icmp: blackbox_exporter's defaults",
			yaml:    "prober: icmp",
			connect: icmpRequest(netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6, "", &netprobev1.IcmpOptions{PayloadBytes: 28, Ttl: proto.Uint32(64)}),
		},
		{
			name: "icmp with every option",
			yaml: `prober: icmp
icmp:
  preferred_ip_protocol: ip4
  ip_protocol_fallback: false
  source_ip_address: 198.18.0.1
  payload_size: 1472
  dont_fragment: true
  ttl: 5
netprobe:
  reverse_lookup: true`,
			connect: func() *netprobev1.ConnectRequest {
				r := icmpRequest(netprobev1.IpFamily_IP_FAMILY_IPV4, "198.18.0.1", &netprobev1.IcmpOptions{PayloadBytes: 1472, DontFragment: true, Ttl: proto.Uint32(5)})
				r.ReverseLookup = true
				return r
			}(),
		},
		{
			// blackbox_exporter's 0 is its default size, and the system's
			// TTL.
			name:    "icmp with payload_size 0 and ttl 0",
			yaml:    "prober: icmp\nicmp:\n  preferred_ip_protocol: ip6\n  payload_size: 0\n  ttl: 0",
			connect: icmpRequest(netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6, "", &netprobev1.IcmpOptions{PayloadBytes: 28}),
		},
		{
			// The trace's default timeout, 5s, is more than half the
			// scrape's 4s: it has half, and the connect the rest.
			name: "trace with its defaults",
			yaml: "prober: tcp\nnetprobe:\n  trace: {}",
			connect: &netprobev1.ConnectRequest{
				Target: &netprobev1.Target{Host: "mail.test", Port: 25, IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6},
				Trace:  &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ON_FAILURE, MaxHops: 30, ProbesPerHop: 1, Timeout: durationpb.New(2 * time.Second)},
			},
		},
		{
			// The probe has the module's 1s, and the trace what it leaves
			// of the scrape's 4s, within its own 5s.
			name: "trace and a module timeout",
			yaml: "prober: tcp\ntimeout: 1s\nnetprobe:\n  trace: {}",
			connect: &netprobev1.ConnectRequest{
				Target: &netprobev1.Target{Host: "mail.test", Port: 25, IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6},
				Trace:  &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ON_FAILURE, MaxHops: 30, ProbesPerHop: 1, Timeout: durationpb.New(3 * time.Second)},
			},
		},
		{
			name: "trace with every option",
			yaml: "prober: tcp\nnetprobe:\n  trace:\n    when: always\n    max_hops: 64\n    probes_per_hop: 10\n    timeout: 1500ms",
			connect: &netprobev1.ConnectRequest{
				Target: &netprobev1.Target{Host: "mail.test", Port: 25, IpFamily: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6},
				Trace:  &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS, MaxHops: 64, ProbesPerHop: 10, Timeout: durationpb.New(1500 * time.Millisecond)},
			},
		},
		{
			name: "udp",
			yaml: "prober: udp\nnetprobe:\n  payload: \"ping\\n\"\n  read_timeout: 500ms",
			fetch: &netprobev1.FetchRequest{
				Target:  &netprobev1.Target{Host: "mail.test", Port: 25, Network: netprobev1.Network_NETWORK_UDP},
				Request: &netprobev1.FetchRequest_Payload{Payload: []byte("ping\n")},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := "modules:\n  m:\n" + indent(tc.yaml, "    ")
			set, warnings, err := modules.Parse([]byte(text), filepath.Join(dir, "modules.yml"))
			if err != nil || len(warnings) > 0 {
				t.Fatalf("%v, warnings %q in\n%s", err, warnings, text)
			}
			m := set.Modules["m"]
			if m.Err != nil {
				t.Fatal(m.Err)
			}
			connect, fetch := m.Request(target, 4*time.Second)
			if tc.connect != nil {
				tc.connect.Timeout = connect.GetTimeout()
			}
			if tc.fetch != nil {
				tc.fetch.Timeout, tc.fetch.ReadTimeout = fetch.GetTimeout(), fetch.GetReadTimeout()
			}
			if diff := cmp.Diff(tc.connect, connect, protocmp.Transform()); diff != "" {
				t.Errorf("connect request (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.fetch, fetch, protocmp.Transform()); diff != "" {
				t.Errorf("fetch request (-want +got):\n%s", diff)
			}
			if (m.ClientCert != nil) != tc.cert {
				t.Errorf("client certificate %v, want one: %v", m.ClientCert != nil, tc.cert)
			}
			// The module's timeout shortens the scrape's; a trace's time
			// comes out of the scrape's.
			want := 4 * time.Second
			if m.Trace == nil && m.Timeout > 0 {
				want = min(want, m.Timeout)
			}
			if got := connect.GetTimeout().AsDuration() + connect.GetTrace().GetTimeout().AsDuration() + fetch.GetTimeout().AsDuration(); got != want {
				t.Errorf("timeout %v, trace included, want %v", got, want)
			}
		})
	}
}

// icmpRequest is an icmp module's request of mail.test: an echo, with no
// port.
func icmpRequest(family netprobev1.IpFamily, source string, o *netprobev1.IcmpOptions) *netprobev1.ConnectRequest {
	return &netprobev1.ConnectRequest{
		Target: &netprobev1.Target{Host: "mail.test", Network: netprobev1.Network_NETWORK_ICMP, IpFamily: family, SourceAddress: source},
		Icmp:   o,
	}
}

// TestExpectInfo makes probe_expect_info's labels of a match, as
// blackbox.yml's ssh_banner_extract asks.
func TestExpectInfo(t *testing.T) {
	set, _, err := modules.Load("testdata/blackbox.yml")
	if err != nil {
		t.Fatal(err)
	}
	m := set.Modules["ssh_banner_extract"]
	groups := [][]byte{[]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2"), []byte("OpenSSH_9.2p1"), []byte("Debian-2")}
	names, values := m.ExpectInfo(0, groups)
	if !slices.Equal(names, []string{"ssh_version", "ssh_comments"}) || !slices.Equal(values, []string{"OpenSSH_9.2p1", "Debian-2"}) {
		t.Errorf("labels %q = %q", names, values)
	}
	if names, _ := m.ExpectInfo(1, groups); names != nil {
		t.Errorf("a step without labels has %q", names)
	}
}

// TestInvalid refuses files with what is wrong, the module and the line.
func TestInvalid(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key in tcp", "prober: tcp\ntcp:\n  tls: true\n  colour: blue", "module m, line 6: unknown key \"colour\""},
		{"unknown key in a module", "prober: tcp\nretries: 3", "module m, line 4: unknown key \"retries\""},
		{"unknown tls_config key", "prober: tcp\ntcp:\n  tls: true\n  tls_config:\n    ca_ref: vault", "module m, line 7: unknown key \"ca_ref\""},
		{"unknown netprobe key", "prober: tcp\nnetprobe:\n  speed: 11", "module m, line 5: unknown key \"speed\""},
		{"a string for a bool", "prober: tcp\ntcp:\n  tls: yes please", "module m, line 5: cannot unmarshal"},
		{"bad duration", "prober: tcp\ntimeout: soon", "module m, line 4: cannot unmarshal"},
		{"negative timeout", "prober: tcp\ntimeout: -1s", "module m, line 4: timeout -1s is negative"},
		{"no prober", "timeout: 1s", "module m, line 2: no prober"},
		{"unknown prober", "prober: smtp", "module m, line 3: unknown prober \"smtp\""},
		{"bad ip protocol", "prober: tcp\ntcp:\n  preferred_ip_protocol: ip5", "module m, line 5: preferred_ip_protocol \"ip5\""},
		{"bad source address", "prober: tcp\ntcp:\n  source_ip_address: eth0", "module m, line 5: source_ip_address \"eth0\" is not an IP address"},
		{"bad regexp", "prober: tcp\ntcp:\n  query_response:\n  - send: x\n  - expect: \"(unclosed\"", "module m, line 7: expect \"(unclosed\""},
		{"expect and expect_bytes", "prober: tcp\ntcp:\n  query_response:\n  - expect: a\n    expect_bytes: b", "module m, line 7: an entry has expect or expect_bytes, not both"},
		{"send and send_bytes", "prober: tcp\ntcp:\n  query_response:\n  - send: a\n    send_bytes: b", "module m, line 7: an entry has send or send_bytes, not both"},
		{"an empty entry", "prober: tcp\ntcp:\n  query_response:\n  - {}", "module m, line 6: an entry expects, sends or starts TLS"},
		{"labels without expect", "prober: tcp\ntcp:\n  query_response:\n  - send: x\n    labels: [{name: a, value: b}]", "module m, line 7: labels name the groups of an expect"},
		{"bad label name", "prober: tcp\ntcp:\n  query_response:\n  - expect: (x)\n    labels: [{name: 1a, value: $1}]", "module m, line 7: label name \"1a\""},
		// Either would fail every scrape that matched, in Prometheus's
		// client: a name it reserves, a metric with a label twice.
		{"a reserved label name", "prober: tcp\ntcp:\n  query_response:\n  - expect: (x)\n    labels: [{name: __name__, value: $1}]", "module m, line 7: label name \"__name__\" starts with __, which Prometheus reserves"},
		{"a label twice", "prober: tcp\ntcp:\n  query_response:\n  - expect: (x)\n    labels: [{name: a, value: $1}, {name: a, value: $1}]", "module m, line 7: label name \"a\" comes twice"},
		{"tls and starttls", "prober: tcp\ntcp:\n  tls: true\n  query_response:\n  - starttls: true", "module m, line 5: a module with tls: true"},
		{"starttls twice", "prober: tcp\ntcp:\n  query_response:\n  - starttls: true\n  - starttls: true", "module m, line 7: TLS starts once"},
		{"bad tls version", "prober: tcp\ntcp:\n  tls: true\n  tls_config:\n    min_version: TLS14", "module m, line 7: min_version \"TLS14\""},
		{"ca and ca_file", "prober: tcp\ntcp:\n  tls: true\n  tls_config:\n    ca: x\n    ca_file: y", "module m, line 8: ca and ca_file are one or the other"},
		{"not a certificate", "prober: tcp\ntcp:\n  tls: true\n  tls_config:\n    ca: not pem", "module m, line 7: no PEM certificate"},
		{"cert without key", "prober: tcp\ntcp:\n  tls: true\n  tls_config:\n    cert: x", "module m, line 7: a client certificate needs cert_file and key_file both"},
		{"udp with a tcp section", "prober: udp\ntcp:\n  tls: true", "module m, line 4: a udp module takes no tcp section"},
		{"tcp with a payload", "prober: tcp\nnetprobe:\n  payload: x", "module m, line 5: a tcp module sends with query_response"},
		// icmp: what blackbox_exporter would take and do otherwise than
		// asked (any preferred_ip_protocol but ip6 is ip4 there; a
		// negative payload_size panics), or what an echo cannot do.
		{"icmp: unknown key", "prober: icmp\nicmp:\n  ttl: 5\n  hops: 3", "module m, line 6: unknown key \"hops\""},
		{"icmp: unknown ip protocol", "prober: icmp\nicmp:\n  preferred_ip_protocol: icmp4", "module m, line 5: preferred_ip_protocol \"icmp4\": want ip4 or ip6"},
		{"icmp: bad source address", "prober: icmp\nicmp:\n  source_ip_address: 300.1.1.1", "module m, line 5: source_ip_address \"300.1.1.1\" is not an IP address"},
		{"icmp: negative payload_size", "prober: icmp\nicmp:\n  payload_size: -1", "module m, line 5: payload_size -1 is negative"},
		{"icmp: payload_size over an IPv4 packet", "prober: icmp\nicmp:\n  payload_size: 99999999999", "module m, line 5: payload_size 99999999999 is over 65507"},
		{"icmp: payload_size not a number", "prober: icmp\nicmp:\n  payload_size: 1k", "module m, line 5: cannot unmarshal"},
		{"icmp: ttl 300", "prober: icmp\nicmp:\n  ttl: 300", "module m, line 5: ttl 300 is out of range 0-255"},
		{"icmp: ttl 256", "prober: icmp\nicmp:\n  ttl: 256", "module m, line 5: ttl 256 is out of range 0-255"},
		{"icmp: negative ttl", "prober: icmp\nicmp:\n  ttl: -1", "module m, line 5: ttl -1 is out of range 0-255"},
		{"icmp: dont_fragment not a bool", "prober: icmp\nicmp:\n  dont_fragment: maybe", "module m, line 5: cannot unmarshal"},
		{"icmp with a tcp section", "prober: icmp\ntcp:\n  tls: true", "module m, line 4: an icmp module takes no tcp section"},
		{"tcp with an icmp section", "prober: tcp\nicmp:\n  ttl: 5", "module m, line 4: a tcp module takes no icmp section"},
		{"udp with an icmp section", "prober: udp\nicmp:\n  ttl: 5", "module m, line 4: a udp module takes no icmp section"},
		{"icmp with alpn", "prober: icmp\nnetprobe:\n  alpn: [h2]", "module m, line 5: an icmp module takes no netprobe.alpn"},
		{"icmp with a payload", "prober: icmp\nnetprobe:\n  payload: x", "module m, line 5: an icmp module takes no netprobe.payload"},
		{"icmp with read_timeout", "prober: icmp\nnetprobe:\n  read_timeout: 1s", "module m, line 5: an icmp module takes no netprobe.read_timeout"},
		{"icmp with max_bytes", "prober: icmp\nnetprobe:\n  max_bytes: 10", "module m, line 5: an icmp module takes no netprobe.max_bytes"},
		// trace: each limit just past its end, and the modules a trace
		// cannot follow.
		{"trace: max_hops 0", "prober: tcp\nnetprobe:\n  trace:\n    max_hops: 0", "module m, line 6: max_hops 0 is out of range 1-64"},
		{"trace: max_hops 65", "prober: tcp\nnetprobe:\n  trace:\n    max_hops: 65", "module m, line 6: max_hops 65 is out of range 1-64"},
		{"trace: negative max_hops", "prober: tcp\nnetprobe:\n  trace:\n    max_hops: -1", "module m, line 6: max_hops -1 is out of range 1-64"},
		{"trace: max_hops past an int", "prober: tcp\nnetprobe:\n  trace:\n    max_hops: 99999999999999999999", "module m, line 6: cannot unmarshal"},
		{"trace: probes_per_hop 0", "prober: tcp\nnetprobe:\n  trace:\n    probes_per_hop: 0", "module m, line 6: probes_per_hop 0 is out of range 1-10"},
		{"trace: probes_per_hop 11", "prober: tcp\nnetprobe:\n  trace:\n    probes_per_hop: 11", "module m, line 6: probes_per_hop 11 is out of range 1-10"},
		{"trace: negative timeout", "prober: tcp\nnetprobe:\n  trace:\n    timeout: -1s", "module m, line 6: timeout -1s is not positive"},
		{"trace: zero timeout", "prober: tcp\nnetprobe:\n  trace:\n    timeout: 0s", "module m, line 6: timeout 0s is not positive"},
		{"trace: unknown when", "prober: tcp\nnetprobe:\n  trace:\n    when: sometimes", "module m, line 6: when \"sometimes\": want on_failure or always"},
		{"trace: unknown key", "prober: tcp\nnetprobe:\n  trace:\n    udp: true", "module m, line 6: unknown key \"udp\""},
		{"trace on a udp module", "prober: udp\nnetprobe:\n  trace: {}", "module m, line 5: netprobe.trace follows a tcp module's connect, and this module's prober is udp"},
		{"trace on an icmp module", "prober: icmp\nnetprobe:\n  trace: {}", "module m, line 5: netprobe.trace follows a tcp module's connect, and this module's prober is icmp"},
		{"trace with a dialogue", "prober: tcp\ntcp:\n  query_response:\n  - expect: x\nnetprobe:\n  trace: {}", "module m, line 8: a module with query_response takes no netprobe.trace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := "modules:\n  m:\n" + indent(tc.yaml, "    ")
			_, _, err := modules.Parse([]byte(text), "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want an error with %q, for\n%s", err, tc.want, text)
			}
		})
	}
	for _, text := range []string{"modules: [a, b]", "{{{", "modules:\n  m: 3", "other: 1"} {
		if _, _, err := modules.Parse([]byte(text), ""); err == nil {
			t.Errorf("%q loads", text)
		}
	}
	if set, _, err := modules.Parse(nil, ""); err != nil || len(set.Modules) != 0 {
		t.Errorf("an empty file: %v, %v", set, err)
	}
}

// TestDefaults checks the modules of a probed without a file: the
// STARTTLS ones are the dialogues, with their refusals.
func TestDefaults(t *testing.T) {
	set := modules.Defaults()
	want := []string{"ftp_starttls", "imap_starttls", "ldap_starttls", "pop3_starttls", "postgres_starttls", "smtp_starttls", "tcp_connect", "tls_connect", "udp"}
	if got := set.Names(); !slices.Equal(got, want) {
		t.Errorf("defaults %q, want %q", got, want)
	}
	target := &netprobev1.Target{Host: "mail.test", Port: 25}
	_, f := set.Modules["smtp_starttls"].Request(target, time.Second)
	if n := len(f.GetSteps()); n < 2 || !f.GetSteps()[n-2].GetStartTls() || f.GetSteps()[n-1].GetExpect() != "" || f.GetTls() == nil {
		t.Errorf("smtp_starttls is %v, want the dialogue ending at its handshake", f)
	}
	// Each expect before the handshake fails at once on a refusal.
	for i, st := range f.GetSteps()[:len(f.GetSteps())-1] {
		if st.GetExpect() != "" && st.GetRefusal() == "" {
			t.Errorf("smtp_starttls: step %d expects %q with no refusal", i, st.GetExpect())
		}
	}
	c, _ := set.Modules["tls_connect"].Request(target, time.Second)
	if c.GetTls() == nil || c.GetTarget().GetIpFamily() != netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6 {
		t.Errorf("tls_connect is %v", c)
	}
}

// FuzzParse feeds the parser what it may not expect: it must refuse or
// load, never panic, and what it loads must make requests.
func FuzzParse(f *testing.F) {
	for _, file := range []string{"testdata/blackbox.yml", "testdata/example.yml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n      - expect: (x)\n        send: ${1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, _, err := modules.Parse(data, "")
		if err != nil {
			return
		}
		for _, m := range set.Modules {
			m.Request(&netprobev1.Target{Host: "h", Port: 1}, time.Second)
			m.ExpectInfo(0, [][]byte{[]byte("x"), nil})
		}
	})
}

func indent(s, by string) string {
	return by + strings.ReplaceAll(s, "\n", "\n"+by) + "\n"
}
