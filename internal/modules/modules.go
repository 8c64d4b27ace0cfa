// Package modules reads probe modules in blackbox_exporter's format: the
// file probed takes with --modules-file and scrapes of /probe name. Its
// tcp and icmp modules become netprobe probes with every option of
// blackbox_exporter's tcp and icmp probers; a "netprobe:" section adds
// netprobe's own options, and the udp prober is netprobe's. Modules of
// blackbox_exporter's other probers (http, dns, grpc, unix, websocket) are
// listed as not run, so that an existing blackbox.yml loads as it is.
package modules

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/reload"
	"github.com/netprobe/netprobe/starttls"
)

// Set is the modules of a file, or the defaults.
type Set struct {
	// Modules are the modules netprobe runs, by name.
	Modules map[string]*Module
	// Skipped are the modules of other probers, by name, with their
	// prober: a scrape of one is refused, saying so.
	Skipped map[string]string
}

// Names lists the modules netprobe runs, sorted.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.Modules))
	for name := range s.Modules {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Module is one module netprobe runs.
type Module struct {
	Name string
	// Prober is "tcp", "udp" or "icmp".
	Prober string
	// Timeout bounds the probe; zero leaves it to the scrape's timeout.
	Timeout time.Duration
	// Family is preferred_ip_protocol with ip_protocol_fallback.
	Family netprobev1.IpFamily
	// Source is source_ip_address.
	Source netip.Addr
	// TLS is the handshake's options, when the module has one: at the
	// start (tls: true) or at a starttls step. ClientCert is tls_config's
	// cert_file and key_file, presented when the target asks.
	TLS        *netprobev1.TlsOptions
	ClientCert *tls.Certificate
	// Steps are query_response's, in netprobe's terms; see Fetch.
	Steps []*netprobev1.Step
	// Labels are the probe_expect_info labels of the expect steps, by
	// step index; their values are templates of the match's groups.
	Labels map[int][]Label
	// ALPN, ReadTimeout, MaxBytes and ReverseLookup are the netprobe
	// section's; Payload is a udp module's datagram.
	ALPN          []string
	ReadTimeout   time.Duration
	MaxBytes      uint64
	ReverseLookup bool
	Payload       []byte
	// ICMP is an icmp module's echo: its payload size, don't-fragment
	// and TTL.
	ICMP *netprobev1.IcmpOptions
	// Trace is the netprobe section's trace: the path to the target,
	// traced after a tcp module's connect (see Budget); nil for none.
	Trace *netprobev1.TraceOptions

	// Err is why the module cannot run, such as a tls_config file that
	// could not be read; its scrapes fail saying so.
	Err error

	expects map[int]*regexp.Regexp
}

// unreadable is a file a module names that could not be read: the module
// loads, and fails when scraped, as blackbox_exporter's does.
type unreadable struct{ err error }

func (u unreadable) Error() string { return u.err.Error() }

// Label is one label of probe_expect_info.
type Label struct {
	Name, Value string
}

// Load reads and checks the module file at path.
func Load(path string) (*Set, []string, error) {
	b, err := reload.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	set, warnings, err := Parse(b, path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return set, warnings, nil
}

// The probers of blackbox_exporter that netprobe does not run.
var otherProbers = []string{"http", "dns", "grpc", "unix", "websocket"}

// Parse reads a module file; file resolves its relative file names (of
// ca_file, cert_file, key_file) as blackbox_exporter does, against the
// file's directory. It returns the warnings a loader should log: the
// modules it will not run.
func Parse(data []byte, file string) (*Set, []string, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, err
	}
	var doc fileYAML
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file has no modules.
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, nameModules(err, &root)
	}
	set := &Set{Modules: map[string]*Module{}, Skipped: map[string]string{}}
	var warnings []string
	for _, name := range sortedKeys(doc.Modules) {
		m := doc.Modules[name]
		at := func(path ...any) string {
			return fmt.Sprintf("module %s, line %d", name, lineOf(&root, append([]any{"modules", name}, path...)...))
		}
		switch {
		case m.Prober == "tcp" || m.Prober == "udp" || m.Prober == "icmp":
			mod, err := m.module(name, file, at)
			if err != nil {
				return nil, nil, err
			}
			set.Modules[name] = mod
			if mod.Err != nil {
				warnings = append(warnings, fmt.Sprintf("%v: scrapes of module %s fail until it is fixed", mod.Err, name))
			}
		case slices.Contains(otherProbers, m.Prober):
			set.Skipped[name] = m.Prober
			warnings = append(warnings, fmt.Sprintf("module %s: netprobe does not run the %s prober; scrapes of it are refused", name, m.Prober))
		case m.Prober == "":
			return nil, nil, fmt.Errorf("%s: no prober", at())
		default:
			return nil, nil, fmt.Errorf("%s: unknown prober %q: netprobe runs tcp, udp and icmp", at("prober"), m.Prober)
		}
	}
	return set, warnings, nil
}

// fileYAML is the file: blackbox_exporter's, strictly.
type fileYAML struct {
	Modules map[string]moduleYAML `yaml:"modules"`
}

// moduleYAML is a module. The sections of the probers netprobe does not
// run are taken as they are.
type moduleYAML struct {
	Prober    string        `yaml:"prober"`
	Timeout   time.Duration `yaml:"timeout"`
	TCP       tcpYAML       `yaml:"tcp"`
	Netprobe  netprobeYAML  `yaml:"netprobe"`
	HTTP      yaml.Node     `yaml:"http"`
	DNS       yaml.Node     `yaml:"dns"`
	ICMP      icmpYAML      `yaml:"icmp"`
	GRPC      yaml.Node     `yaml:"grpc"`
	Unix      yaml.Node     `yaml:"unix"`
	Websocket yaml.Node     `yaml:"websocket"`
}

type tcpYAML struct {
	PreferredIPProtocol string              `yaml:"preferred_ip_protocol"`
	IPProtocolFallback  *bool               `yaml:"ip_protocol_fallback"`
	SourceIPAddress     string              `yaml:"source_ip_address"`
	QueryResponse       []queryResponseYAML `yaml:"query_response"`
	TLS                 bool                `yaml:"tls"`
	TLSConfig           tlsConfigYAML       `yaml:"tls_config"`
}

// icmpYAML is blackbox_exporter's icmp prober's section. The pointers
// tell a key left out, which takes blackbox_exporter's default, from one
// set to 0.
type icmpYAML struct {
	PreferredIPProtocol string `yaml:"preferred_ip_protocol"`
	IPProtocolFallback  *bool  `yaml:"ip_protocol_fallback"`
	SourceIPAddress     string `yaml:"source_ip_address"`
	PayloadSize         *int   `yaml:"payload_size"`
	DontFragment        bool   `yaml:"dont_fragment"`
	TTL                 *int   `yaml:"ttl"`
}

// blackbox_exporter's icmp prober's defaults.
const (
	// bbePayload is the size of the data it sends when payload_size is
	// 0 or left out: "Prometheus Blackbox Exporter".
	bbePayload = 28
	// bbeTTL is the TTL it sets when ttl is left out; ttl 0 leaves the
	// system's.
	bbeTTL = 64
	// maxEchoData fills an IPv4 packet, less its IP and ICMP headers. The
	// probe service's cap is lower (IcmpOptions.payload_bytes), and the
	// module check applies it.
	maxEchoData = 65535 - 20 - 8
)

type queryResponseYAML struct {
	Expect      string      `yaml:"expect"`
	ExpectBytes string      `yaml:"expect_bytes"`
	Labels      []labelYAML `yaml:"labels"`
	Send        string      `yaml:"send"`
	// SendBytes is netprobe's: sent as it is, without send's newline
	// (blackbox_exporter's issue 1657 proposes it).
	SendBytes string `yaml:"send_bytes"`
	StartTLS  bool   `yaml:"starttls"`
}

type labelYAML struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// tlsConfigYAML is the part of the Prometheus TLS configuration a probe
// uses.
type tlsConfigYAML struct {
	CA                 string `yaml:"ca"`
	Cert               string `yaml:"cert"`
	Key                string `yaml:"key"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	MinVersion         string `yaml:"min_version"`
	MaxVersion         string `yaml:"max_version"`
}

// netprobeYAML is netprobe's own section.
type netprobeYAML struct {
	ALPN          []string      `yaml:"alpn"`
	ReadTimeout   time.Duration `yaml:"read_timeout"`
	MaxBytes      uint64        `yaml:"max_bytes"`
	ReverseLookup bool          `yaml:"reverse_lookup"`
	Payload       string        `yaml:"payload"`
	Trace         *traceYAML    `yaml:"trace"`
}

// traceYAML is the netprobe section's trace. The pointers tell a key left
// out, which takes its default, from one set to 0, which is refused.
type traceYAML struct {
	When         string         `yaml:"when"`
	MaxHops      *int           `yaml:"max_hops"`
	ProbesPerHop *int           `yaml:"probes_per_hop"`
	Timeout      *time.Duration `yaml:"timeout"`
}

// A module's trace: its defaults and caps, the probe service's
// (TraceOptions) but for the timeout, whose default is shorter, as a
// scrape's budget holds both the probe and its trace (see Budget).
const (
	DefaultTraceHops    = 30
	MaxTraceHops        = 64
	MaxTraceProbes      = 10
	DefaultTraceTimeout = 5 * time.Second
)

// tlsVersions are the Prometheus names of TLS versions.
var tlsVersions = map[string]netprobev1.TlsVersion{
	"TLS10": netprobev1.TlsVersion_TLS_VERSION_1_0,
	"TLS11": netprobev1.TlsVersion_TLS_VERSION_1_1,
	"TLS12": netprobev1.TlsVersion_TLS_VERSION_1_2,
	"TLS13": netprobev1.TlsVersion_TLS_VERSION_1_3,
}

// module checks a tcp or udp module and converts it; at names a place in
// it for an error.
func (m *moduleYAML) module(name, file string, at func(...any) string) (*Module, error) {
	t := &m.TCP
	out := &Module{
		Name: name, Prober: m.Prober, Timeout: m.Timeout,
		ALPN: m.Netprobe.ALPN, ReadTimeout: m.Netprobe.ReadTimeout, MaxBytes: m.Netprobe.MaxBytes,
		ReverseLookup: m.Netprobe.ReverseLookup,
		Labels:        map[int][]Label{}, expects: map[int]*regexp.Regexp{},
	}
	if m.Timeout < 0 {
		return nil, fmt.Errorf("%s: timeout %v is negative", at("timeout"), m.Timeout)
	}
	if m.Prober != "icmp" && m.ICMP != (icmpYAML{}) {
		return nil, fmt.Errorf("%s: a %s module takes no icmp section", at("icmp"), m.Prober)
	}
	if tr := m.Netprobe.Trace; tr != nil {
		var err error
		if out.Trace, err = tr.options(m, at); err != nil {
			return nil, err
		}
	}
	switch m.Prober {
	case "udp":
		if !t.empty() {
			return nil, fmt.Errorf("%s: a udp module takes no tcp section: its datagram is netprobe.payload", at("tcp"))
		}
		out.Payload = []byte(m.Netprobe.Payload)
		return out, nil
	case "icmp":
		if !t.empty() {
			return nil, fmt.Errorf("%s: an icmp module takes no tcp section: its options are in its icmp section", at("tcp"))
		}
		return out, m.icmp(out, at)
	}
	if m.Netprobe.Payload != "" {
		return nil, fmt.Errorf("%s: a tcp module sends with query_response, not netprobe.payload", at("netprobe", "payload"))
	}
	var err error
	if out.Family, out.Source, err = addressing("tcp", t.PreferredIPProtocol, t.IPProtocolFallback, t.SourceIPAddress, at); err != nil {
		return nil, err
	}
	startTLS := slices.ContainsFunc(t.QueryResponse, func(q queryResponseYAML) bool { return q.StartTLS })
	if t.TLS || startTLS || len(out.ALPN) > 0 {
		out.TLS, out.ClientCert, err = t.TLSConfig.options(file, at)
		var u unreadable
		switch {
		case errors.As(err, &u):
			out.Err, out.TLS = u.err, &netprobev1.TlsOptions{}
		case err != nil:
			return nil, err
		}
		out.TLS.Alpn = out.ALPN
	}
	if t.TLS && startTLS {
		return nil, fmt.Errorf("%s: a module with tls: true is TLS from the start; starttls starts it later", at("tcp", "tls"))
	}
	if t.TLS {
		// TLS from the start is a start_tls before anything else.
		out.Steps = append(out.Steps, &netprobev1.Step{Action: &netprobev1.Step_StartTls{StartTls: true}})
	}
	return out, out.querySteps(t.QueryResponse, at)
}

// addressing reads the preferred_ip_protocol, ip_protocol_fallback and
// source_ip_address of the prober's section.
func addressing(prober, preferred string, fallbackSet *bool, source string, at func(...any) string) (netprobev1.IpFamily, netip.Addr, error) {
	var family netprobev1.IpFamily
	fallback := fallbackSet == nil || *fallbackSet
	switch {
	case preferred == "ip4" && fallback:
		family = netprobev1.IpFamily_IP_FAMILY_PREFER_IPV4
	case preferred == "ip4":
		family = netprobev1.IpFamily_IP_FAMILY_IPV4
	case preferred != "" && preferred != "ip6":
		// blackbox_exporter takes any other value for ip4: a typo would
		// probe the other family than meant.
		return 0, netip.Addr{}, fmt.Errorf("%s: preferred_ip_protocol %q: want ip4 or ip6", at(prober, "preferred_ip_protocol"), preferred)
	case fallback:
		family = netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6
	default:
		family = netprobev1.IpFamily_IP_FAMILY_IPV6
	}
	if source == "" {
		return family, netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(source)
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("%s: source_ip_address %q is not an IP address", at(prober, "source_ip_address"), source)
	}
	return family, a.Unmap(), nil
}

// icmp checks an icmp module's section and netprobe section into out. An
// echo carries payload_size bytes of data, 28 when it is 0 or left out;
// its TTL is ttl, 64 when left out, the system's when 0; as
// blackbox_exporter's. The caps on them are the probe service's, which
// the module check applies (see exporter.ModuleCheck).
func (m *moduleYAML) icmp(out *Module, at func(...any) string) error {
	c := &m.ICMP
	for _, o := range []struct {
		key string
		set bool
	}{
		{"alpn", len(m.Netprobe.ALPN) > 0}, {"read_timeout", m.Netprobe.ReadTimeout != 0},
		{"max_bytes", m.Netprobe.MaxBytes != 0}, {"payload", m.Netprobe.Payload != ""},
	} {
		if o.set {
			return fmt.Errorf("%s: an icmp module takes no netprobe.%s: an echo has no TLS and reads one reply", at("netprobe", o.key), o.key)
		}
	}
	var err error
	if out.Family, out.Source, err = addressing("icmp", c.PreferredIPProtocol, c.IPProtocolFallback, c.SourceIPAddress, at); err != nil {
		return err
	}
	out.ICMP = &netprobev1.IcmpOptions{PayloadBytes: bbePayload, DontFragment: c.DontFragment}
	switch n := c.PayloadSize; {
	case n == nil || *n == 0:
	case *n < 0:
		return fmt.Errorf("%s: payload_size %d is negative", at("icmp", "payload_size"), *n)
	case *n > maxEchoData:
		return fmt.Errorf("%s: payload_size %d is over %d, the most data an echo can carry", at("icmp", "payload_size"), *n, maxEchoData)
	default:
		out.ICMP.PayloadBytes = uint32(*n)
	}
	switch n := c.TTL; {
	case n == nil:
		out.ICMP.Ttl = proto.Uint32(bbeTTL)
	case *n < 0 || *n > 255:
		return fmt.Errorf("%s: ttl %d is out of range 0-255 (0 leaves the system's default)", at("icmp", "ttl"), *n)
	case *n > 0:
		out.ICMP.Ttl = proto.Uint32(uint32(*n))
	}
	return nil
}

// options checks a module's trace and converts it. A trace follows a tcp
// module's connect: a module with a dialogue is a Fetch, and udp and icmp
// modules are not TCP, and none of them carries one.
func (tr *traceYAML) options(m *moduleYAML, at func(...any) string) (*netprobev1.TraceOptions, error) {
	here := func(key string) string { return at("netprobe", "trace", key) }
	switch {
	case m.Prober != "tcp":
		return nil, fmt.Errorf("%s: netprobe.trace follows a tcp module's connect, and this module's prober is %s", at("netprobe", "trace"), m.Prober)
	case len(m.TCP.QueryResponse) > 0:
		return nil, fmt.Errorf("%s: a module with query_response takes no netprobe.trace: a trace follows a tcp module's connect, without a dialogue", at("netprobe", "trace"))
	}
	o := &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ON_FAILURE, MaxHops: DefaultTraceHops, ProbesPerHop: 1, Timeout: durationpb.New(DefaultTraceTimeout)}
	switch tr.When {
	case "", "on_failure":
	case "always":
		o.When = netprobev1.TraceWhen_TRACE_WHEN_ALWAYS
	default:
		return nil, fmt.Errorf("%s: when %q: want on_failure or always", here("when"), tr.When)
	}
	if n := tr.MaxHops; n != nil {
		if *n < 1 || *n > MaxTraceHops {
			return nil, fmt.Errorf("%s: max_hops %d is out of range 1-%d", here("max_hops"), *n, MaxTraceHops)
		}
		o.MaxHops = uint32(*n)
	}
	if n := tr.ProbesPerHop; n != nil {
		if *n < 1 || *n > MaxTraceProbes {
			return nil, fmt.Errorf("%s: probes_per_hop %d is out of range 1-%d", here("probes_per_hop"), *n, MaxTraceProbes)
		}
		o.ProbesPerHop = uint32(*n)
	}
	// The server's maximum (probed --max-timeout) is the module check's.
	if d := tr.Timeout; d != nil {
		if *d <= 0 {
			return nil, fmt.Errorf("%s: timeout %v is not positive", here("timeout"), *d)
		}
		o.Timeout = durationpb.New(*d)
	}
	return o, nil
}

func (t *tcpYAML) empty() bool {
	return t.PreferredIPProtocol == "" && t.IPProtocolFallback == nil && t.SourceIPAddress == "" &&
		len(t.QueryResponse) == 0 && !t.TLS && t.TLSConfig == (tlsConfigYAML{})
}

// querySteps turns query_response into steps. An entry may expect (line
// by line, as blackbox_exporter matches), then send (with the expect's groups in place of ${1}; blackbox_exporter ends
// each send with a newline), then start TLS. A dialogue that does not end
// with an expect gets an empty one, which matches at once: the probe ends
// after its last step, as blackbox_exporter's does.
func (m *Module) querySteps(qrs []queryResponseYAML, at func(...any) string) error {
	for i, q := range qrs {
		here := func(key string) string { return at("tcp", "query_response", i, key) }
		switch {
		case q.Expect != "" && q.ExpectBytes != "":
			return fmt.Errorf("%s: an entry has expect or expect_bytes, not both", here("expect_bytes"))
		case q.Expect != "":
			re, err := regexp.Compile("(?m)" + q.Expect)
			if err != nil {
				return fmt.Errorf("%s: expect %q: %v", here("expect"), q.Expect, err)
			}
			m.expects[len(m.Steps)] = re
			if len(q.Labels) > 0 {
				labels := make([]Label, len(q.Labels))
				for j, l := range q.Labels {
					// Prometheus keeps names starting with __ for itself,
					// and a metric has each label once: either would fail
					// every scrape that matched.
					where := at("tcp", "query_response", i, "labels", j, "name")
					switch {
					case !labelName.MatchString(l.Name):
						return fmt.Errorf("%s: label name %q is not a Prometheus label name", where, l.Name)
					case strings.HasPrefix(l.Name, "__"):
						return fmt.Errorf("%s: label name %q starts with __, which Prometheus reserves", where, l.Name)
					case slices.ContainsFunc(labels[:j], func(prev Label) bool { return prev.Name == l.Name }):
						return fmt.Errorf("%s: label name %q comes twice", where, l.Name)
					}
					labels[j] = Label(l)
				}
				m.Labels[len(m.Steps)] = labels
			}
			m.Steps = append(m.Steps, &netprobev1.Step{Action: &netprobev1.Step_ExpectLine{ExpectLine: q.Expect}})
		case q.ExpectBytes != "":
			m.Steps = append(m.Steps, &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: `\A` + regexp.QuoteMeta(q.ExpectBytes)}})
		case len(q.Labels) > 0:
			return fmt.Errorf("%s: labels name the groups of an expect, and the entry has none", here("labels"))
		}
		switch {
		case q.Send != "" && q.SendBytes != "":
			return fmt.Errorf("%s: an entry has send or send_bytes, not both", here("send_bytes"))
		case q.SendBytes != "":
			m.Steps = append(m.Steps, &netprobev1.Step{Action: &netprobev1.Step_Send{Send: []byte(q.SendBytes)}})
		case q.Send != "" && q.Expect != "":
			m.Steps = append(m.Steps, &netprobev1.Step{Action: &netprobev1.Step_SendTemplate{SendTemplate: q.Send + "\n"}})
		case q.Send != "":
			m.Steps = append(m.Steps, &netprobev1.Step{Action: &netprobev1.Step_Send{Send: []byte(q.Send + "\n")}})
		}
		if q.StartTLS {
			if slices.ContainsFunc(m.Steps, func(s *netprobev1.Step) bool { return s.GetStartTls() }) {
				return fmt.Errorf("%s: TLS starts once", here("starttls"))
			}
			m.Steps = append(m.Steps, &netprobev1.Step{Action: &netprobev1.Step_StartTls{StartTls: true}})
		}
		if q.Expect == "" && q.ExpectBytes == "" && q.Send == "" && q.SendBytes == "" && !q.StartTLS {
			return fmt.Errorf("%s: an entry expects, sends or starts TLS", at("tcp", "query_response", i))
		}
	}
	switch {
	case len(qrs) == 0:
		// No dialogue, TLS or not, is a Connect.
		m.Steps = nil
	case m.Steps[len(m.Steps)-1].GetExpect() == "" && m.Steps[len(m.Steps)-1].GetExpectLine() == "":
		m.Steps = append(m.Steps, &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: ""}})
	}
	return nil
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// options converts tls_config, reading its files (relative to the module
// file's directory, as blackbox_exporter reads them).
func (c *tlsConfigYAML) options(file string, at func(...any) string) (*netprobev1.TlsOptions, *tls.Certificate, error) {
	here := func(key string) string { return at("tcp", "tls_config", key) }
	o := &netprobev1.TlsOptions{ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify}
	for _, v := range []struct {
		key  string
		name string
		out  *netprobev1.TlsVersion
	}{{"min_version", c.MinVersion, &o.MinVersion}, {"max_version", c.MaxVersion, &o.MaxVersion}} {
		if v.name == "" {
			continue
		}
		tv, ok := tlsVersions[v.name]
		if !ok {
			return nil, nil, fmt.Errorf("%s: %s %q: want TLS10, TLS11, TLS12 or TLS13", here(v.key), v.key, v.name)
		}
		*v.out = tv
	}
	read := func(key, inline, path string) ([]byte, error) {
		switch {
		case inline != "" && path != "":
			return nil, fmt.Errorf("%s: %s and %s_file are one or the other", here(key+"_file"), key, key)
		case path == "":
			return []byte(inline), nil
		}
		b, err := reload.ReadFile(resolve(file, path))
		if err != nil {
			return nil, unreadable{fmt.Errorf("%s: %w", here(key+"_file"), err)}
		}
		return b, nil
	}
	ca, err := read("ca", c.CA, c.CAFile)
	if err != nil {
		return nil, nil, err
	}
	// Errors name the key the file has, inline or a file name.
	which := func(key, inline string) string {
		if inline != "" {
			return key
		}
		return key + "_file"
	}
	if len(ca) > 0 && !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, nil, fmt.Errorf("%s: no PEM certificate", here(which("ca", c.CA)))
	}
	o.CaBundle = ca
	cert, err := read("cert", c.Cert, c.CertFile)
	if err != nil {
		return nil, nil, err
	}
	key, err := read("key", c.Key, c.KeyFile)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case len(cert) > 0 && len(key) == 0:
		return nil, nil, fmt.Errorf("%s: a client certificate needs cert_file and key_file both", here(which("cert", c.Cert)))
	case len(key) > 0 && len(cert) == 0:
		return nil, nil, fmt.Errorf("%s: a client certificate needs cert_file and key_file both", here(which("key", c.Key)))
	}
	if len(cert) == 0 {
		return o, nil, nil
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", here(which("cert", c.Cert)), err)
	}
	return o, &pair, nil
}

// resolve is path relative to the directory of file.
func resolve(file, path string) string {
	if file == "" || strings.HasPrefix(path, "/") {
		return path
	}
	if i := strings.LastIndexByte(file, '/'); i >= 0 {
		return file[:i+1] + path
	}
	return path
}

// Defaults are the modules of a probed without a file: tcp_connect,
// tls_connect, udp, and PROTO_starttls for each STARTTLS dialogue, whose
// expects carry the refusals that fail the probe at once.
func Defaults() *Set {
	set := &Set{Modules: map[string]*Module{
		"tcp_connect": {Name: "tcp_connect", Prober: "tcp", Family: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6},
		"tls_connect": {Name: "tls_connect", Prober: "tcp", Family: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6, TLS: &netprobev1.TlsOptions{}},
		"udp":         {Name: "udp", Prober: "udp", ReadTimeout: time.Second},
	}, Skipped: map[string]string{}}
	for _, name := range starttls.Names() {
		d, _ := starttls.Lookup(name)
		m := &Module{Name: name + "_starttls", Prober: "tcp", Family: netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6, TLS: &netprobev1.TlsOptions{}, expects: map[int]*regexp.Regexp{}}
		m.Steps = append(d.Steps, &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: ""}})
		set.Modules[m.Name] = m
	}
	return set
}

// ExpectInfo is the probe_expect_info labels of step's match: names and
// the values made of the groups, or nothing when the step has no labels.
func (m *Module) ExpectInfo(step int, groups [][]byte) (names, values []string) {
	labels := m.Labels[step]
	if len(labels) == 0 || m.expects[step] == nil {
		return nil, nil
	}
	for _, l := range labels {
		names = append(names, l.Name)
		values = append(values, string(m.Expand(step, l.Value, groups)))
	}
	return names, values
}

// Expand is template with the groups of step's match in place of $1,
// ${1} and ${name}, as the probe service expands the send_template that
// follows the expect; empty when step is not one of the module's expects.
func (m *Module) Expand(step int, template string, groups [][]byte) []byte {
	re := m.expects[step]
	if re == nil {
		return nil
	}
	// Expand reads the groups through indexes into one source.
	var src []byte
	idx := make([]int, 0, 2*len(groups))
	for _, g := range groups {
		idx = append(idx, len(src), len(src)+len(g))
		src = append(src, g...)
	}
	return re.Expand(nil, []byte(template), src, idx)
}

// lineOf finds the line of the node at path (map keys and sequence
// indexes) under root, or the line of the deepest part of it that exists.
func lineOf(root *yaml.Node, path ...any) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == p {
						line, next = n.Content[i].Line, n.Content[i+1]
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && p < len(n.Content) {
				next = n.Content[p]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

// nameModules adds to a decoding error the module each of its lines is
// in.
func nameModules(err error, root *yaml.Node) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, e := range te.Errors {
		msgs[i] = e
		var (
			line        int
			field, kind string
		)
		// yaml.v3 names the Go type a key was not found in, which says
		// nothing to whoever wrote the file.
		if _, scanErr := fmt.Sscanf(e, "line %d: field %s not found in type %s", &line, &field, &kind); scanErr == nil {
			e = fmt.Sprintf("line %d: unknown key %q", line, field)
			msgs[i] = e
		}
		if _, scanErr := fmt.Sscanf(e, "line %d:", &line); scanErr == nil {
			if name := moduleAt(root, line); name != "" {
				msgs[i] = "module " + name + ", " + e
			}
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}

// moduleAt names the module whose text holds line.
func moduleAt(root *yaml.Node, line int) string {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	var modules *yaml.Node
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "modules" {
			modules = n.Content[i+1]
		}
	}
	name := ""
	for i := 0; modules != nil && modules.Kind == yaml.MappingNode && i+1 < len(modules.Content); i += 2 {
		if modules.Content[i].Line <= line {
			name = modules.Content[i].Value
		}
	}
	return name
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// IdentityPrefix starts the client identity name of a module's
// certificate (cert_file and key_file): "module/NAME".
const IdentityPrefix = "module/"

// Budget splits a scrape's timeout between the probe and its trace, so
// that the two end within it and the scrape has its answer before
// Prometheus gives up on it. The probe has the module's timeout, or the
// scrape's when that is shorter; the trace has its own timeout, within
// what the probe leaves of the scrape's, or half of it when the probe
// would leave less; and the probe then what the trace leaves. Without a
// trace, the probe has the module's timeout or the scrape's.
func (m *Module) Budget(scrape time.Duration) (probe, trace time.Duration) {
	probe = scrape
	if m.Timeout > 0 && m.Timeout < probe {
		probe = m.Timeout
	}
	if m.Trace == nil {
		return probe, 0
	}
	trace = min(m.Trace.GetTimeout().AsDuration(), max(scrape-probe, scrape/2))
	return min(probe, scrape-trace), trace
}

// Request is the probe of target that the module makes: a Connect when it
// has no dialogue, a Fetch otherwise; the other is nil. timeout is the
// scrape's, which the module's timeout may shorten, and bounds the probe
// and its trace together (see Budget).
func (m *Module) Request(target *netprobev1.Target, timeout time.Duration) (*netprobev1.ConnectRequest, *netprobev1.FetchRequest) {
	t := proto.CloneOf(target)
	t.IpFamily = m.Family
	if m.Source.IsValid() {
		t.SourceAddress = m.Source.String()
	}
	var tlsOpts *netprobev1.TlsOptions
	if m.TLS != nil {
		tlsOpts = proto.CloneOf(m.TLS)
		if m.ClientCert != nil {
			tlsOpts.ClientIdentity = IdentityPrefix + m.Name
		}
	}
	probe, trace := m.Budget(timeout)
	d := durationpb.New(probe)
	if m.Prober == "icmp" {
		// An echo's target is a host, without a port.
		t := &netprobev1.Target{Host: target.GetHost(), Network: netprobev1.Network_NETWORK_ICMP, IpFamily: m.Family, SourceAddress: t.GetSourceAddress()}
		return &netprobev1.ConnectRequest{Target: t, Timeout: d, Icmp: proto.CloneOf(m.ICMP), ReverseLookup: m.ReverseLookup}, nil
	}
	if m.Prober == "udp" {
		t.Network = netprobev1.Network_NETWORK_UDP
		f := &netprobev1.FetchRequest{Target: t, Timeout: d, MaxBytes: m.MaxBytes, Request: &netprobev1.FetchRequest_Payload{Payload: m.Payload}}
		if m.ReadTimeout > 0 {
			f.ReadTimeout = durationpb.New(m.ReadTimeout)
		}
		return nil, f
	}
	if len(m.Steps) == 0 {
		c := &netprobev1.ConnectRequest{Target: t, Timeout: d, Tls: tlsOpts, ReverseLookup: m.ReverseLookup}
		if m.Trace != nil {
			c.Trace = proto.CloneOf(m.Trace)
			c.Trace.Timeout = durationpb.New(trace)
		}
		return c, nil
	}
	f := &netprobev1.FetchRequest{Target: t, Timeout: d, Tls: tlsOpts, Steps: m.Steps, MaxBytes: m.MaxBytes, ReverseLookup: m.ReverseLookup}
	if m.ReadTimeout > 0 {
		f.ReadTimeout = durationpb.New(m.ReadTimeout)
	}
	return nil, f
}
