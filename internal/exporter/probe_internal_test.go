package exporter

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/probemetrics"
)

// TestScrapeTimeout reads the scrape's timeout as Prometheus sends it, and
// as a hostile scraper might.
func TestScrapeTimeout(t *testing.T) {
	const offset, max = 500 * time.Millisecond, 60 * time.Second
	for _, tc := range []struct {
		header string
		module time.Duration
		want   time.Duration
	}{
		{"", 0, max},
		{"10", 0, 9500 * time.Millisecond},
		{"10", 3 * time.Second, 3 * time.Second},
		{"0.2", 0, 200 * time.Millisecond},
		{"1e308", 0, max},
		{"+Inf", 0, max},
		{"NaN", 0, max},
		{"-5", 0, max},
		{"0", 0, max},
		{"ten", 0, max},
	} {
		h := http.Header{}
		if tc.header != "" {
			h.Set("X-Prometheus-Scrape-Timeout-Seconds", tc.header)
		}
		if got, why := scrapeTimeout(h, offset, tc.module, max); got != tc.want {
			t.Errorf("header %q, module %v: %v (%s), want %v", tc.header, tc.module, got, why, tc.want)
		}
	}
	// debug=true says why.
	h := http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"10"}}
	for _, tc := range []struct {
		module, max time.Duration
		want        string
	}{
		{0, max, `the scrape's X-Prometheus-Scrape-Timeout-Seconds "10", 2m0s at most, less --scrape-timeout-offset 500ms: 9.5s; within --max-timeout 1m0s`},
		{3 * time.Second, max, `less --scrape-timeout-offset 500ms: 9.5s; the module's timeout 3s is shorter; within --max-timeout 1m0s`},
		{0, 2 * time.Second, `--max-timeout 2s caps it`},
	} {
		if _, why := scrapeTimeout(h, offset, tc.module, tc.max); !strings.Contains(why, tc.want) {
			t.Errorf("module %v, max %v: %q, want %q", tc.module, tc.max, why, tc.want)
		}
	}
	if _, why := scrapeTimeout(http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"ten"}}, offset, 0, max); !strings.Contains(why, `"ten" is not a positive number of seconds: 2m0s`) {
		t.Errorf("an unreadable header: %q", why)
	}
}

// TestExpose holds expose to promhttp's handler with the options it
// stands for, serving the same metrics: the same status, headers and
// bytes for each Accept header a scraper may send (Prometheus's, each
// format's, several at once, garbage, one too long to be a format) and
// each name[] filter, with the headers alternating so that negotiate's
// remembered answer is both right and wrong for the next one; for a
// probe whose labels carry what a format escapes, one that failed, an
// echo and a fan-out.
func TestExpose(t *testing.T) {
	d := durationpb.New
	tcp := &modules.Module{Name: "tcp_connect", Prober: "tcp"}
	logger := slog.New(slog.DiscardHandler)
	tls := probemetrics.New(tcp, false)
	tls.Addressed("127.0.0.1")
	tls.Connected(&netprobev1.ConnectResponse{
		PeerAddress: "127.0.0.1:443", ResolveDuration: d(0), ConnectDuration: d(time.Millisecond), TotalDuration: d(5 * time.Millisecond),
		Attempts: []*netprobev1.DialAttempt{{Address: "127.0.0.1:443"}},
		Tls: &netprobev1.TlsResult{HandshakeDuration: d(3 * time.Millisecond), Version: "TLS 1.3", PeerCertificates: []*netprobev1.Certificate{
			{Subject: `CN="quoted" \ back` + "\nslash \xff", Issuer: "CN=ca", DnsNames: []string{"a.example", "b.example"}, Serial: "0a", Sha256Fingerprint: "ab", NotAfter: timestamppb.New(time.Unix(2e9, 0))},
		}},
		TcpInfo: &netprobev1.TcpInfo{Rtt: d(40 * time.Microsecond), TotalRetransmits: 2},
	})
	failed := probemetrics.New(tcp, false)
	failed.Addressed("localhost")
	refused := &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED"}
	failed.Connected(&netprobev1.ConnectResponse{ResolveDuration: d(time.Millisecond), ConnectDuration: d(time.Millisecond), TotalDuration: d(2 * time.Millisecond),
		Attempts: []*netprobev1.DialAttempt{{Address: "127.0.0.1:1", Error: refused}}, Error: refused})
	echo := probemetrics.New(&modules.Module{Name: "icmp", Prober: "icmp"}, false)
	echo.Addressed("127.0.0.1")
	echo.Connected(&netprobev1.ConnectResponse{ResolveDuration: d(0), Icmp: &netprobev1.IcmpResult{SetupDuration: d(time.Microsecond), Rtt: d(30 * time.Microsecond), ReplyTtl: 64}})
	fanout := probemetrics.NewFanout(tcp)
	fanout.Whole().Addressed("127.0.0.1")
	fanout.Keep(&netprobev1.SweepResponse{Vantage: &netprobev1.Vantage{Node: "n1"}, Connect: &netprobev1.ConnectResponse{PeerAddress: "127.0.0.1:80", TotalDuration: d(time.Millisecond),
		Tls: &netprobev1.TlsResult{Version: "TLS 1.2"}}})
	fanout.Keep(&netprobev1.SweepResponse{Vantage: &netprobev1.Vantage{Node: "n\"2"}, VantageError: &netprobev1.VantageError{Code: "UNAVAILABLE"}})
	fanout.Keep(&netprobev1.SweepResponse{Fanout: &netprobev1.FanoutSummary{Asked: 2, Answered: 1, Failed: 1}})
	probes := map[string]*probemetrics.Exposition{
		"TLS":     tls.Exposition(time.Second, logger),
		"failed":  failed.Exposition(time.Second, logger),
		"echo":    echo.Exposition(time.Second, logger),
		"fan-out": fanout.Exposition(time.Second, logger),
	}

	accepts := []string{
		"",
		"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
		"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
		"text/plain",
		"text/plain;version=0.0.4",
		"text/plain;version=1.0.0;escaping=dots",
		"text/plain;version=1.0.0;escaping=values",
		"application/openmetrics-text; version=0.0.1",
		"application/openmetrics-text;version=2.0.0",
		"application/openmetrics-text;version=1.0.0;escaping=underscores",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=compact-text",
		"*/*",
		"application/json",
		";;;,,=q;q=x,\x00",
		strings.Repeat("text/plain;q=0.1,", 4096),
	}
	queries := []string{"", "name[]=probe_success", "name%5B%5D=probe_ssl_last_chain_info&name[]=probe_success&name[]=probe_fanout_node_failure_info", "name[]=nothing", "name[]="}
	type response struct {
		code   int
		header http.Header
		body   string
	}
	serve := func(h http.Handler, accept []string, query string) response {
		r := httptest.NewRequest(http.MethodGet, "/probe?"+query, nil)
		r.Header["Accept"] = accept
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return response{w.Code, w.Header(), w.Body.String()}
	}
	for name, e := range probes {
		t.Run(name, func(t *testing.T) {
			check := func(accept []string, query string) {
				t.Helper()
				want := serve(promhttp.HandlerFor(e, promhttp.HandlerOpts{EnableOpenMetrics: true, DisableCompression: true}), accept, query)
				got := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { expose(w, r, r.URL.Query(), e) }), accept, query)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("Accept %.80q, query %q:\ngot  %d %v\n%s\nwant %d %v\n%s", accept, query, got.code, got.header, got.body, want.code, want.header, want.body)
				}
				if want.code != http.StatusOK || query == "" && !strings.Contains(want.body, "probe_success") {
					t.Fatalf("promhttp's answer: %d %s", want.code, want.body)
				}
			}
			for range 2 {
				for _, a := range accepts {
					for _, q := range queries {
						check([]string{a}, q)
					}
				}
				slices.Reverse(accepts)
			}
			for i := range accepts {
				check([]string{accepts[i], accepts[(i+1)%len(accepts)]}, "")
				check(nil, "")
			}
		})
	}
}
