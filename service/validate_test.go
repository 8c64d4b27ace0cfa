package service_test

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/service"
)

// badRequestFields returns the fields a refused call's BadRequest names.
func badRequestFields(t *testing.T, err error) []string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("status = %v, want INVALID_ARGUMENT", err)
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				if v.Description == "" {
					t.Errorf("violation of %s has no description", v.Field)
				}
				fields = append(fields, v.Field)
			}
		}
	}
	return fields
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	// Every request that names a real host points here, so a dial would
	// show up as an accepted connection.
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	good := func() *netprobev1.Target { return &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()} }
	with := func(f func(*netprobev1.Target)) *netprobev1.Target {
		t := good()
		f(t)
		return t
	}
	udp := with(func(t *netprobev1.Target) { t.Network = netprobev1.Network_NETWORK_UDP })

	connects := []struct {
		name   string
		req    *netprobev1.ConnectRequest
		fields []string
	}{
		{"no target", &netprobev1.ConnectRequest{}, []string{"target"}},
		{"no host", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Host = "" })}, []string{"target.host"}},
		{"host with a space", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Host = "exa mple.test" })}, []string{"target.host"}},
		{"zone on a global address", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Host = "2001:db8::1%eth0" })}, []string{"target.host"}},
		{"zone too long", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Host = "fe80::1%" + strings.Repeat("e", 4000) })}, []string{"target.host"}},
		{"zone with a control character", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Host = "fe80::1%eth\n0" })}, []string{"target.host"}},
		{"host with NUL", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Host = "example.test\x00.evil" })}, []string{"target.host"}},
		{"no port, no service", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Port = 0 })}, []string{"target.port"}},
		{"port over 65535", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Port = 65536 })}, []string{"target.port"}},
		{"bad service name", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Port = 0; t.Service = "ht tp" })}, []string{"target.service"}},
		// /probe makes HOST:PORT's PORT the service when it is not a
		// port: 65536 was looked up, and UNKNOWN_SERVICE.
		{"service a port out of range", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Port = 0; t.Service = "65536" })}, []string{"target.service"}},
		{"service a port", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Port = 0; t.Service = "80" })}, []string{"target.service"}},
		{"unknown network", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.Network = 7 })}, []string{"target.network"}},
		{"unknown family", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.IpFamily = 9 })}, []string{"target.ip_family"}},
		{"IPv6 forced on an IPv4 address", &netprobev1.ConnectRequest{Target: with(func(t *netprobev1.Target) { t.IpFamily = netprobev1.IpFamily_IP_FAMILY_IPV6 })}, []string{"target.ip_family"}},
		{"negative timeout", &netprobev1.ConnectRequest{Target: good(), Timeout: &durationpb.Duration{Seconds: -1}}, []string{"timeout"}},
		{"timeout over the maximum", &netprobev1.ConnectRequest{Target: good(), Timeout: &durationpb.Duration{Seconds: 3600}}, []string{"timeout"}},
		{"several at once", &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "a b", Port: 70000}}, []string{"target.host", "target.port"}},
		{"trace of 65 hops", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{MaxHops: 65}}, []string{"trace.max_hops"}},
		{"trace of 2^32-1 hops", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{MaxHops: math.MaxUint32}}, []string{"trace.max_hops"}},
		{"trace of 11 probes a hop", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{ProbesPerHop: 11}}, []string{"trace.probes_per_hop"}},
		{"trace of 2^32-1 probes a hop", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{ProbesPerHop: math.MaxUint32}}, []string{"trace.probes_per_hop"}},
		{"trace with a negative timeout", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{Timeout: &durationpb.Duration{Seconds: -1}}}, []string{"trace.timeout"}},
		{"trace with a zero timeout", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{Timeout: &durationpb.Duration{}}}, []string{"trace.timeout"}},
		{"trace with a timeout over the maximum", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{Timeout: &durationpb.Duration{Seconds: 3600}}}, []string{"trace.timeout"}},
		{"trace with a timeout out of range", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{Timeout: &durationpb.Duration{Seconds: math.MaxInt64}}}, []string{"trace.timeout"}},
		{"trace with an unknown when", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{When: 3}}, []string{"trace.when"}},
		{"trace of an ICMP echo", &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "127.0.0.1", Network: netprobev1.Network_NETWORK_ICMP}, Trace: &netprobev1.TraceOptions{}}, []string{"trace"}},
		{"UDP trace, every limit at once", &netprobev1.ConnectRequest{Target: udp, Trace: &netprobev1.TraceOptions{MaxHops: 1000, ProbesPerHop: 1000, Timeout: &durationpb.Duration{Seconds: -5}}}, []string{"trace.max_hops", "trace.probes_per_hop", "trace.timeout"}},
		{"trace, every limit at once", &netprobev1.ConnectRequest{Target: good(), Trace: &netprobev1.TraceOptions{MaxHops: 1000, ProbesPerHop: 1000, Timeout: &durationpb.Duration{Seconds: -5}}}, []string{"trace.max_hops", "trace.probes_per_hop", "trace.timeout"}},
	}
	for _, tt := range connects {
		t.Run("Connect/"+tt.name, func(t *testing.T) {
			_, err := e.Probe.Connect(probetest.Context(t), tt.req)
			if diff := cmp.Diff(tt.fields, badRequestFields(t, err)); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}

	fetches := []struct {
		name   string
		req    *netprobev1.FetchRequest
		fields []string
	}{
		{"payload over the cap", &netprobev1.FetchRequest{Target: good(), Request: &netprobev1.FetchRequest_Payload{Payload: bytes.Repeat([]byte("z"), 1<<20+1)}}, []string{"payload"}},
		{"max_bytes over the cap", &netprobev1.FetchRequest{Target: good(), MaxBytes: 1 << 40}, []string{"max_bytes"}},
		{"negative read timeout", &netprobev1.FetchRequest{Target: good(), ReadTimeout: &durationpb.Duration{Nanos: -5}}, []string{"read_timeout"}},
		{"unknown framing", &netprobev1.FetchRequest{Target: good(), Framing: 42}, []string{"framing"}},
		{"datagrams over TCP", &netprobev1.FetchRequest{Target: good(), Framing: netprobev1.Framing_FRAMING_DATAGRAMS}, []string{"framing"}},
		{"lines over UDP", &netprobev1.FetchRequest{Target: udp, Framing: netprobev1.Framing_FRAMING_LINES}, []string{"framing"}},
		{"HTTP over UDP", &netprobev1.FetchRequest{Target: udp, Request: &netprobev1.FetchRequest_HttpGet{HttpGet: &netprobev1.HttpGet{}}}, []string{"http_get"}},
		{"HTTP path without a slash", &netprobev1.FetchRequest{Target: good(), Request: &netprobev1.FetchRequest_HttpGet{HttpGet: &netprobev1.HttpGet{Path: "index.html"}}}, []string{"http_get.path"}},
		{"HTTP header injection", &netprobev1.FetchRequest{Target: good(), Request: &netprobev1.FetchRequest_HttpGet{HttpGet: &netprobev1.HttpGet{Host: "a\r\nX-Evil: 1"}}}, []string{"http_get.host"}},
		{"half-close over UDP", &netprobev1.FetchRequest{Target: udp, KeepWriteOpen: true}, []string{"keep_write_open"}},
	}
	for _, tt := range fetches {
		t.Run("Fetch/"+tt.name, func(t *testing.T) {
			stream, err := e.Probe.Fetch(probetest.Context(t), tt.req)
			if err == nil {
				_, err = stream.Recv()
			}
			if diff := cmp.Diff(tt.fields, badRequestFields(t, err)); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}

	resolves := []struct {
		name   string
		req    *netprobev1.ResolveServiceRequest
		fields []string
	}{
		{"nothing", &netprobev1.ResolveServiceRequest{}, []string{"name"}},
		{"name and port", &netprobev1.ResolveServiceRequest{Name: "http", Port: 80}, []string{"port"}},
		{"bad protocol", &netprobev1.ResolveServiceRequest{Name: "http", Protocol: "t c p"}, []string{"protocol"}},
		{"port over 65535", &netprobev1.ResolveServiceRequest{Port: 70000}, []string{"port"}},
		{"name a port out of range", &netprobev1.ResolveServiceRequest{Name: "65536"}, []string{"name"}},
	}
	for _, tt := range resolves {
		t.Run("ResolveService/"+tt.name, func(t *testing.T) {
			_, err := e.Probe.ResolveService(probetest.Context(t), tt.req)
			if diff := cmp.Diff(tt.fields, badRequestFields(t, err)); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}

	if !tg.AcceptedNothing() {
		t.Error("a refused request dialled its target")
	}
}

// TestBadRequestMessages checks that a refusal quotes what the caller
// sent readably and safely: characters beyond ASCII as themselves,
// control and formatting characters (a right-to-left override) escaped,
// never cut in two.
func TestBadRequestMessages(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	for _, tt := range []struct {
		host, port, service string
		want                string
	}{
		{host: "münchen.test", want: `target.host: "münchen.test" is not an IP address or a valid DNS name: character 'ü' is not allowed: a name with letters beyond ASCII is given in its IDNA form (xn--...)`},
		{host: "例え.テスト", want: `target.host: "例え.テスト" is not an IP address or a valid DNS name: character '例' is not allowed: a name with letters beyond ASCII is given in its IDNA form (xn--...)`},
		{host: "evil\u202egnp.test", want: `target.host: "evil\u202egnp.test" is not an IP address or a valid DNS name: character '\u202e' is not allowed`},
		{host: "fe80::1%eth0\u00a0", want: `target.host: "fe80::1%eth0\u00a0": character '\u00a0' is not allowed in a zone`},
		{host: strings.Repeat("a", 63) + "ü" + strings.Repeat("b", 10), want: `target.host: "` + strings.Repeat("a", 63) + `"... (75 bytes) is not an IP address or a valid DNS name: a label is longer than 63 characters`},
		{host: "127.0.0.1", service: "65536", want: `target.service: "65536" is not a valid service name: a number, and out of the ports' range 1-65535`},
		{host: "127.0.0.1", service: "443", want: `target.service: "443" is not a valid service name: a number: a port goes in port`},
		{host: "127.0.0.1", service: "htétp", want: `target.service: "htétp" is not a valid service name: character 'é' is not allowed`},
	} {
		port := uint32(80)
		if tt.service != "" {
			port = 0
		}
		_, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: tt.host, Port: port, Service: tt.service}})
		if got := status.Convert(err).Message(); got != "invalid request: "+tt.want {
			t.Errorf("%q:\n got %s\nwant invalid request: %s", tt.host+" "+tt.service, got, tt.want)
		}
	}
}

func TestResolveService(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.WithServices(t, "http 8080/tcp www\n"))
	tests := []struct {
		name string
		req  *netprobev1.ResolveServiceRequest
		want *netprobev1.ResolveServiceResponse
	}{
		{"by name, system", &netprobev1.ResolveServiceRequest{Name: "www"},
			&netprobev1.ResolveServiceResponse{Name: "http", Port: 8080, Protocol: "tcp", Aliases: []string{"www"}, Source: netprobev1.ServiceSource_SERVICE_SOURCE_SYSTEM}},
		{"by name, builtin", &netprobev1.ResolveServiceRequest{Name: "domain", Protocol: "udp"},
			&netprobev1.ResolveServiceResponse{Name: "domain", Port: 53, Protocol: "udp", Source: netprobev1.ServiceSource_SERVICE_SOURCE_BUILTIN}},
		{"by port", &netprobev1.ResolveServiceRequest{Port: 22},
			&netprobev1.ResolveServiceResponse{Name: "ssh", Port: 22, Protocol: "tcp", Source: netprobev1.ServiceSource_SERVICE_SOURCE_BUILTIN}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Probe.ResolveService(probetest.Context(t), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	got, err := e.Probe.ResolveService(probetest.Context(t), &netprobev1.ResolveServiceRequest{Name: "no-such-service"})
	if err != nil {
		t.Fatal(err)
	}
	checkError(t, got.Error, &wantError{stage: netprobev1.Stage_STAGE_SERVICE_LOOKUP, reason: netprobev1.Reason_REASON_UNKNOWN_SERVICE, address: "no-such-service"})
}

// TestNewDefaults builds a server from a zero Config, as a program outside
// this module can: service names come from the built-in table.
func TestNewDefaults(t *testing.T) {
	srv, err := service.New(service.Config{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.ResolveService(probetest.Context(t), &netprobev1.ResolveServiceRequest{Name: "https"})
	if err != nil || resp.GetPort() != 443 || resp.GetSource() != netprobev1.ServiceSource_SERVICE_SOURCE_BUILTIN {
		t.Errorf("https: %v, %v; want 443 from the built-in table", resp, err)
	}
}

// TestDefaultLimits pins the limits a Config that sets none gets: they are
// declared in Limits' tags, which probed's flags and docs read too.
func TestDefaultLimits(t *testing.T) {
	want := service.Limits{
		DefaultTimeout:      5 * time.Second,
		MaxTimeout:          time.Minute,
		MaxPayloadBytes:     1 << 20,
		MaxFetchBytes:       64 << 20,
		MaxSweepConcurrency: 64,
		MaxSweepTargets:     10000,
	}
	if got := service.DefaultLimits(); got != want {
		t.Errorf("DefaultLimits() = %+v, want %+v", got, want)
	}
}
