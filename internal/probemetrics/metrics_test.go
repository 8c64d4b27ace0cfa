package probemetrics

import (
	"bytes"
	"hash/fnv"
	"log/slog"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
)

// TestIPHash checks probe_ip_addr_hash against the values Debian's
// blackbox_exporter 0.23 gives for the same addresses (scraped by hand;
// cmd/probed's TestSeriesParity compares them live).
func TestIPHash(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want float64
	}{
		{"127.0.0.1", 3668918509},
		{"127.0.0.2", 3618585652},
		{"127.0.0.3", 3635363271},
		{"::1", 1751717746},
	} {
		if got := ipHash(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("ipHash(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// TestTraceMetrics gives a trace's metrics: Grafana's route hash (FNV-1
// of the answering addresses, a silent TTL adding nothing), the loss as a
// fraction of every probe sent, the last TTL that answered, and one
// hop_info a TTL; none without hops.
func TestTraceMetrics(t *testing.T) {
	path := &netprobev1.Path{Hops: []*netprobev1.Hop{
		{Ttl: 1, Address: "198.18.1.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED, Sent: 3, Answered: 2,
			Rtts: []*durationpb.Duration{durationpb.New(time.Millisecond), durationpb.New(3 * time.Millisecond)}},
		{Ttl: 2, Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE, Sent: 3},
		{Ttl: 3, Address: "198.18.3.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE, Sent: 2, Answered: 2},
	}, End: netprobev1.PathEnd_PATH_END_UNREACHABLE}
	h := fnv.New32()
	h.Write([]byte("198.18.1.1198.18.3.1"))
	gather := func(path *netprobev1.Path) map[string]float64 {
		r := New(&modules.Module{Name: "m", Prober: "tcp"}, false)
		r.Connected(&netprobev1.ConnectResponse{Path: path, Error: &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT}})
		families, err := r.Registry(time.Second, slog.New(slog.DiscardHandler)).Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, f := range families {
			if !strings.HasPrefix(f.GetName(), "probe_traceroute_") {
				continue
			}
			for _, m := range f.GetMetric() {
				name := f.GetName()
				for _, l := range m.GetLabel() {
					name += "," + l.GetName() + "=" + l.GetValue()
				}
				got[name] = m.GetGauge().GetValue()
			}
		}
		return got
	}
	want := map[string]float64{
		"probe_traceroute_total_hops":          3,
		"probe_traceroute_packet_loss_percent": 4.0 / 8,
		"probe_traceroute_route_hash":          float64(h.Sum32()),
		"probe_traceroute_last_answered_hop":   3,
		"probe_traceroute_reached":             0,
		"probe_traceroute_hop_info,address=198.18.1.1,answer=HOP_ANSWER_TIME_EXCEEDED,ttl=1": 1,
		"probe_traceroute_hop_info,address=,answer=HOP_ANSWER_NONE,ttl=2":                    1,
		"probe_traceroute_hop_info,address=198.18.3.1,answer=HOP_ANSWER_UNREACHABLE,ttl=3":   1,
		"probe_traceroute_hop_rtt_seconds,ttl=1":                                             0.002,
	}
	if diff := cmp.Diff(want, gather(path)); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	if got := gather(&netprobev1.Path{End: netprobev1.PathEnd_PATH_END_UNSUPPORTED}); len(got) != 0 {
		t.Errorf("a trace without hops gives %v", got)
	}
}

// TestGather holds an Exposition, which /probe's scrapes use, to what a
// prometheus.Registry holding the same metrics gathers (Result.Registry,
// which a fan-out and debug=true use): the families, their help and type,
// their metrics sorted by label values, for probes that give every kind
// of metric, and the text AppendText writes of them in both formats to
// what expfmt writes; and an error, not a second series, for a metric
// given twice.
func TestGather(t *testing.T) {
	d := durationpb.New
	tcp := &modules.Module{Name: "tcp_connect", Prober: "tcp"}
	tls := &netprobev1.TlsResult{HandshakeDuration: d(3 * time.Millisecond), Version: "TLS 1.3", Verified: true, PeerCertificates: []*netprobev1.Certificate{
		{Subject: "CN=leaf \xff", Issuer: "CN=ca", DnsNames: []string{"a.example", "b.example"}, Serial: "0a", Sha256Fingerprint: "ab", NotAfter: timestamppb.New(time.Unix(2e9, 0))},
		{Subject: "CN=ca", NotAfter: timestamppb.New(time.Unix(1.9e9, 0))},
	}}
	for _, tc := range []struct {
		name   string
		module *modules.Module
		result func(r *Result)
	}{
		{"connected, with TLS, TCP_INFO and a trace", tcp, func(r *Result) {
			r.Addressed("127.0.0.1")
			r.Connected(&netprobev1.ConnectResponse{
				PeerAddress: "127.0.0.1:443", ResolveDuration: d(0), ConnectDuration: d(time.Millisecond), TotalDuration: d(5 * time.Millisecond),
				Attempts: []*netprobev1.DialAttempt{{Address: "127.0.0.1:443"}},
				Tls:      tls, TcpInfo: &netprobev1.TcpInfo{Rtt: d(40 * time.Microsecond), TotalRetransmits: 2},
				Path: &netprobev1.Path{Reached: true, Hops: []*netprobev1.Hop{
					{Ttl: 2, Address: "127.0.0.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK, Sent: 1, Answered: 1, Rtts: []*durationpb.Duration{d(time.Millisecond)}},
					{Ttl: 1, Address: "198.18.0.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED, Sent: 1, Answered: 1, Rtts: []*durationpb.Duration{d(time.Millisecond)}},
				}},
			})
		}},
		{"failed after three attempts", tcp, func(r *Result) {
			r.Addressed("localhost")
			refused := &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED"}
			r.Connected(&netprobev1.ConnectResponse{
				ResolvedAddresses: []string{"::1", "127.0.0.1"}, ResolveDuration: d(time.Millisecond), ConnectDuration: d(time.Millisecond), TotalDuration: d(2 * time.Millisecond),
				Attempts: []*netprobev1.DialAttempt{
					{Address: "[::1]:1", Error: refused},
					{Address: "127.0.0.1:1", Abandoned: true},
					{Address: "127.0.0.2:1", Error: &netprobev1.ProbeError{Reason: netprobev1.Reason_REASON_TIMEOUT}},
				},
				Error: refused,
			})
		}},
		{"an echo", &modules.Module{Name: "icmp", Prober: "icmp"}, func(r *Result) {
			r.Addressed("127.0.0.1")
			r.Connected(&netprobev1.ConnectResponse{ResolveDuration: d(0), Icmp: &netprobev1.IcmpResult{SetupDuration: d(time.Microsecond), Rtt: d(30 * time.Microsecond), ReplyTtl: 64, ReplyAddress: "127.0.0.1"}})
		}},
		{"refused before it was dialled", tcp, func(r *Result) {
			r.Fail(&netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_POLICY, Reason: netprobev1.Reason_REASON_DENIED})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(tc.module, false)
			tc.result(r)
			sameAsRegistry(t, r.Registry(time.Second, slog.New(slog.DiscardHandler)), r.metrics(time.Second, slog.New(slog.DiscardHandler)))
		})
	}

	t.Run("one name, with labels and without", func(t *testing.T) {
		p := &probeMetrics{}
		p.gauge(newMetric("probe_x", "x", "a", "b"), 1, "2", "1")
		p.gauge(newMetric("probe_x", "x"), 2)
		p.gauge(newMetric("probe_x", "x", "a", "b"), 3, "1", "2")
		reg := prometheus.NewRegistry()
		reg.MustRegister(p)
		sameAsRegistry(t, reg, p)
	})

	t.Run("values and labels a format writes its own way", func(t *testing.T) {
		p := &probeMetrics{}
		m := newMetric("probe_x", "A help with \"quotes\", a \\ and a\nnewline.", "b", "a")
		for i, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0, 1, -1, 0.1, 100, 1e21, 1e-7, -2.5e-300, math.MaxFloat64, 123456789012} {
			p.gauge(m, v, strconv.Itoa(i), `"quoted" \ back`+"\nslash \xff")
		}
		p.gauge(newMetric("probe_success", "s"), 1)
		reg := prometheus.NewRegistry()
		reg.MustRegister(p)
		sameAsRegistry(t, reg, p)
	})

	t.Run("a metric given twice", func(t *testing.T) {
		p := &probeMetrics{}
		p.gauge(phaseDuration.metric, 1, "connect")
		p.gauge(phaseDuration.metric, 2, "connect")
		reg := prometheus.NewRegistry()
		reg.MustRegister(p)
		if _, err := reg.Gather(); err == nil {
			t.Fatal("a registry gathers a metric given twice")
		}
		e := &Exposition{parts: []*probeMetrics{p}}
		if mfs, err := e.Gather(); err == nil {
			t.Errorf("Gather gave %v, no error", mfs)
		}
		if text, err := e.AppendText(nil, false, nil); err == nil {
			t.Errorf("AppendText gave %q, no error", text)
		}
	})
}

// sameAsRegistry checks that an Exposition of parts gathers what reg,
// which holds them, gathers, and that its AppendText writes what expfmt
// makes of that in the text format and OpenMetrics, all of it and the
// families a name[] filter names.
func sameAsRegistry(t *testing.T, reg *prometheus.Registry, parts ...*probeMetrics) {
	t.Helper()
	want, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	e := &Exposition{parts: parts}
	got, err := e.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform(), cmpopts.EquateNaNs()); diff != "" {
		t.Errorf("Gather differs from a registry's Gather (-registry +Gather):\n%s", diff)
	}
	for _, format := range []expfmt.Format{expfmt.NewFormat(expfmt.TypeTextPlain), expfmt.NewFormat(expfmt.TypeOpenMetrics)} {
		for _, only := range []map[string]bool{nil, {"probe_success": true, "probe_ssl_last_chain_info": true, "probe_x": true}, {}} {
			var text bytes.Buffer
			enc := expfmt.NewEncoder(&text, format)
			for _, mf := range want {
				if only != nil && !only[mf.GetName()] {
					continue
				}
				if err := enc.Encode(mf); err != nil {
					t.Fatal(err)
				}
			}
			if err := enc.(expfmt.Closer).Close(); err != nil {
				t.Fatal(err)
			}
			got, err := e.AppendText([]byte("before\n"), format.FormatType() == expfmt.TypeOpenMetrics, only)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff("before\n"+text.String(), string(got)); diff != "" {
				t.Errorf("AppendText differs from expfmt's %s, name[] %v (-expfmt +AppendText):\n%s", format, only, diff)
			}
		}
	}
}
