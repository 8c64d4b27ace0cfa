package server_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/exporter"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// scraper is probed's metrics listener, for /probe.
type scraper struct {
	url   string
	token string
}

func newScraper(t *testing.T, srv *probetest.Server) *scraper {
	hs := httptest.NewServer(srv.Metrics(t))
	t.Cleanup(hs.Close)
	return &scraper{url: hs.URL}
}

// get scrapes /probe with the query and headers given, returning the
// status and the body.
func (s *scraper) get(t *testing.T, query url.Values, header http.Header) (int, string) {
	t.Helper()
	return s.do(t, "/probe?"+query.Encode(), header)
}

// page gets the status page.
func (s *scraper) page(t *testing.T) (int, string) {
	t.Helper()
	return s.do(t, "/", nil)
}

// do gets path with the headers given and the scraper's token.
func (s *scraper) do(t *testing.T, path string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(probetest.Context(t), "GET", s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// probe scrapes module on target and parses the metrics.
func (s *scraper) probe(t *testing.T, module, target string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := s.get(t, url.Values{"module": {module}, "target": {target}}, nil)
	if code != http.StatusOK {
		t.Fatalf("scrape of %s %s: %d %s", module, target, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%v in\n%s", err, body)
	}
	return families
}

// writeModules writes a module file and returns its path.
func writeModules(t *testing.T, dir, text string) string {
	t.Helper()
	path := filepath.Join(dir, "modules.yml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestScrape scrapes /probe over modules of each kind, against targets
// that answer, refuse, answer wrong, or present a certificate that does
// not verify, and checks blackbox_exporter's metrics and netprobe's.
func TestScrape(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, dir)
	certFile, keyFile := probetest.WriteFiles(t, dir, ca.Issue(t, "scraper", false))
	path := writeModules(t, dir, fmt.Sprintf(`modules:
  tcp_connect:
    prober: tcp
  ssh_banner_extract:
    prober: tcp
    tcp:
      query_response:
      - expect: "^SSH-2.0-([^ -]+)(?: (.*))?$"
        labels:
        - name: ssh_version
          value: "${1}"
        - name: ssh_comments
          value: "${2}"
  irc_banner:
    prober: tcp
    tcp:
      query_response:
      - send: "NICK prober"
      - expect: "PING :([^ ]+)"
        send: "PONG ${1}"
      - expect: "^:[^ ]+ 001"
  tls_connect:
    prober: tcp
    tcp:
      tls: true
      tls_config:
        ca_file: ca.pem
        server_name: localhost
  tls_banner:
    prober: tcp
    tcp:
      tls: true
      tls_config:
        ca_file: ca.pem
        server_name: localhost
      query_response:
      - expect: "^hello"
  mtls:
    prober: tcp
    tcp:
      tls: true
      tls_config:
        ca_file: %s
        cert_file: %s
        key_file: %s
        server_name: localhost
  http_2xx:
    prober: http
`, caFile, certFile, keyFile))
	srv := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile = path }))
	s := newScraper(t, srv)

	live := probetest.Listen(t, "127.0.0.1:0", nil)
	live6 := probetest.Listen(t, "[::1]:0", nil)
	closed := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
	ssh := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		io.WriteString(c, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
		probetest.WaitClosed(c)
	})
	notSSH := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		io.WriteString(c, "220 mail ESMTP\r\n")
		c.Close()
	})
	flood := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		io.WriteString(c, strings.Repeat("a", 8<<10))
		c.Close()
	})
	irc := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		defer c.Close()
		r := bufio.NewReader(c)
		if l, _ := r.ReadString('\n'); l != "NICK prober\n" {
			return
		}
		io.WriteString(c, "PING :x42\r\n")
		if l, _ := r.ReadString('\n'); l == "PONG x42\n" {
			io.WriteString(c, ":irc 001 prober :welcome\r\n")
		}
		probetest.WaitClosed(c)
	})
	expiredAt := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	expired := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		cert := ca.Issue(t, "localhost", true, func(x *x509.Certificate) { x.NotBefore, x.NotAfter = expiredAt.Add(-time.Hour), expiredAt })
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		tc.Handshake()
		tc.Close()
	})
	tlsHello := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "localhost", true)}})
		if tc.Handshake() == nil {
			io.WriteString(tc, "hello\n")
		}
		tc.Close()
	})
	mtls := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "localhost", true)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool})
		if tc.Handshake() == nil {
			io.WriteString(tc, "hello\n")
		}
		tc.Close()
	})

	type want struct {
		family string
		labels map[string]string
		value  float64
	}
	for _, tc := range []struct {
		name, module, target string
		want                 []want
		absent               []string
	}{
		// probe_ip_addr_hash is blackbox_exporter's: Debian's 0.23 gives
		// 3668918509 for 127.0.0.1 and 1751717746 for ::1 (FNV-1a of the
		// address's 4 or 16 bytes).
		{"live", "tcp_connect", live.Addr(), []want{
			{"probe_success", nil, 1}, {"probe_ip_protocol", nil, 4}, {"probe_ip_addr_hash", nil, 3668918509},
			{"probe_attempts", map[string]string{"result": "connected"}, 1}, {"probe_failed_due_to_regex", nil, 0},
		}, []string{"probe_failure_info", "probe_attempts_total"}},
		{"live over IPv6", "tcp_connect", live6.Addr(), []want{
			{"probe_success", nil, 1}, {"probe_ip_protocol", nil, 6}, {"probe_ip_addr_hash", nil, 1751717746},
		}, []string{"probe_failure_info"}},
		{"refused", "tcp_connect", closed, []want{
			{"probe_success", nil, 0}, {"probe_ip_protocol", nil, 4}, {"probe_ip_addr_hash", nil, 3668918509},
			{"probe_failure_info", map[string]string{"stage": "STAGE_CONNECT", "reason": "REASON_REFUSED", "errno": "ECONNREFUSED"}, 1},
			{"probe_attempts", map[string]string{"result": "REASON_REFUSED"}, 1},
		}, nil},
		// A name that does not resolve has blackbox_exporter's address
		// metrics, at 0.
		{"unresolvable", "tcp_connect", "nowhere.test:22", []want{
			{"probe_success", nil, 0}, {"probe_ip_protocol", nil, 0}, {"probe_ip_addr_hash", nil, 0},
			{"probe_failure_info", map[string]string{"stage": "STAGE_RESOLVE", "reason": "REASON_NO_SUCH_HOST", "errno": ""}, 1},
		}, []string{"probe_attempts"}},
		{"banner and its labels", "ssh_banner_extract", ssh.Addr(), []want{
			{"probe_success", nil, 1}, {"probe_failed_due_to_regex", nil, 0},
			{"probe_expect_info", map[string]string{"ssh_version": "OpenSSH_9.2p1", "ssh_comments": "Debian-2"}, 1},
		}, []string{"probe_failure_info"}},
		{"the wrong banner", "ssh_banner_extract", notSSH.Addr(), []want{
			{"probe_success", nil, 0}, {"probe_failed_due_to_regex", nil, 1},
			{"probe_failure_info", map[string]string{"stage": "STAGE_EXPECT", "reason": "REASON_NO_MATCH", "errno": ""}, 1},
		}, []string{"probe_expect_info"}},
		{"an answer made of a match", "irc_banner", irc.Addr(), []want{{"probe_success", nil, 1}, {"probe_failed_due_to_regex", nil, 0}}, nil},
		{"expired certificate", "tls_connect", expired.Addr(), []want{
			{"probe_success", nil, 0},
			{"probe_failure_info", map[string]string{"stage": "STAGE_TLS_HANDSHAKE", "reason": "REASON_CERTIFICATE_EXPIRED", "errno": ""}, 1},
			// The expiry of a chain that did not verify, which
			// blackbox_exporter does not give.
			{"probe_ssl_earliest_cert_expiry", nil, float64(expiredAt.Unix())},
			{"probe_tls_verified", nil, 0},
			{"probe_tls_version_info", map[string]string{"version": "TLS 1.3"}, 1},
		}, []string{"probe_ssl_last_chain_expiry_timestamp_seconds"}},
		{"client certificate from the module", "mtls", mtls.Addr(), []want{
			{"probe_success", nil, 1}, {"probe_tls_verified", nil, 1},
			{"probe_ssl_last_chain_info", map[string]string{"subject": "CN=localhost", "issuer": "CN=netprobe test CA", "subjectalternative": "localhost"}, 1},
			{"probe_netprobe_leaf_certificate_info", map[string]string{"ipaddresses": "127.0.0.1"}, 1},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			families := s.probe(t, tc.module, tc.target)
			for _, w := range tc.want {
				if got, ok := metricValue(families[w.family], w.labels); !ok || got != w.value {
					t.Errorf("%s%v = %v (present: %v), want %v", w.family, w.labels, got, ok, w.value)
				}
			}
			for _, f := range tc.absent {
				if families[f] != nil {
					t.Errorf("%s is present: %v", f, families[f])
				}
			}
			if _, ok := metricValue(families["probe_duration_seconds"], nil); !ok {
				t.Error("no probe_duration_seconds")
			}
			// Each is of one probe, a scrape's: a gauge, as
			// blackbox_exporter's are.
			for name, f := range families {
				if f.GetType() != dto.MetricType_GAUGE {
					t.Errorf("%s is a %v", name, f.GetType())
				}
			}
			// blackbox_exporter's label set, and netprobe's other facts
			// beside it.
			for _, m := range families["probe_ssl_last_chain_info"].GetMetric() {
				if got := slices.Sorted(maps.Keys(labels(m.GetLabel()))); !slices.Equal(got, []string{"fingerprint_sha256", "issuer", "subject", "subjectalternative"}) {
					t.Errorf("probe_ssl_last_chain_info has labels %v", got)
				}
			}
			for _, m := range families["probe_netprobe_leaf_certificate_info"].GetMetric() {
				if labels(m.GetLabel())["serialnumber"] == "" {
					t.Errorf("probe_netprobe_leaf_certificate_info without a serial number: %v", m)
				}
			}
		})
	}

	// The module's certificate is the module's: a gRPC caller may not
	// present it.
	c := client.New(srv.Conn)
	_, err := c.Connect(probetest.Context(t), "tcp", mtls.Addr(), client.ConnectOptions{TLS: &client.TLSOptions{ServerName: "localhost", CABundle: ca.PEM, ClientIdentity: "module/mtls"}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("a gRPC caller presenting module/mtls: %v, want PERMISSION_DENIED", err)
	}

	// debug=true shows, as text a person reads: the log, the timeout and
	// why, each step's bytes sent and received, each expect's expression
	// and its groups, the module, the metrics and the report.
	for _, tc := range []struct {
		name, module, target string
		want                 []string
	}{
		{"a refused connection", "tcp_connect", closed, []string{
			"Logs for the probe:", "beginning probe", "probe failed",
			`Timeout: the scrape's X-Prometheus-Scrape-Timeout-Seconds "4", 2m0s at most, less --scrape-timeout-offset 500ms: 3.5s; within --max-timeout`,
			"no connection: STAGE_CONNECT REASON_REFUSED",
			"Metrics that would have been returned:", "probe_success 0",
			"Module configuration, as netprobe runs it:\nname: tcp_connect\nprober: tcp\nip_family: IP_FAMILY_PREFER_IPV6\n",
			"The probe's report:", "REASON_REFUSED",
		}},
		{"a dialogue", "irc_banner", irc.Addr(), []string{
			"connected to " + irc.Addr(),
			`step 0 send "NICK prober\n" (done)`,
			`step 1 expect_line "PING :([^ ]+)"` + "\n" + `    received "PING :x42\r\n"` + "\n" + `    matched [0] "PING :x42"` + "\n" + `    matched [1] "x42"`,
			`step 2 send_template "PONG ${1}\n": "PONG x42\n" (done)`,
			`step 3 expect_line "^:[^ ]+ 001"` + "\n" + `    received ":irc 001 prober :welcome\r\n"`,
			`matched [0] ":irc 001"`,
			"bytes sent and", "probe succeeded",
			"steps:\n  - send: |\n      NICK prober\n  - expect_line: PING :([^ ]+)\n",
		}},
		{"an expect that fails, and labels", "ssh_banner_extract", notSSH.Addr(), []string{
			`step 0 expect_line "^SSH-2.0-([^ -]+)(?: (.*))?$"` + "\n" + `    received "220 mail ESMTP\r\n"` + "\n" + `    failed: STAGE_EXPECT REASON_NO_MATCH`,
			"  - expect_line: '^SSH-2.0-([^ -]+)(?: (.*))?$'\n    labels:\n      ssh_comments: ${2}\n      ssh_version: ${1}\n",
		}},
		// What the debug page shows of a step is bounded: a target that
		// sends 8 KiB has its first 1 KiB shown, the rest counted.
		{"a flood", "ssh_banner_extract", flood.Addr(), []string{
			`    received "` + strings.Repeat("a", 1024) + `" and 7168 bytes more` + "\n",
		}},
		{"a handshake that fails", "tls_connect", expired.Addr(), []string{
			"  TLS handshake: TLS 1.3, verified false\n  failed: STAGE_TLS_HANDSHAKE REASON_CERTIFICATE_EXPIRED",
			"tls:\n  ca: 1 certificates\n  insecure_skip_verify: false\n  server_name: localhost\n",
		}},
		{"a dialogue over TLS", "tls_banner", tlsHello.Addr(), []string{
			"step 0 start_tls: TLS 1.3, verified true (done)",
			`step 1 expect_line "^hello"` + "\n" + `    received "hello\n"` + "\n" + `    matched [0] "hello"`,
			"steps:\n  - start_tls: true\n  - expect_line: ^hello\n",
		}},
	} {
		t.Run("debug: "+tc.name, func(t *testing.T) {
			code, body := s.get(t, url.Values{"module": {tc.module}, "target": {tc.target}, "debug": {"true"}}, http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"4"}})
			for _, want := range tc.want {
				if code != http.StatusOK || !strings.Contains(body, want) {
					t.Errorf("debug: %d, no %q in\n%s", code, want, body)
				}
			}
			if len(body) > 16<<10 {
				t.Errorf("debug answered %d bytes", len(body))
			}
			// Groups are text, not protojson's base64.
			if strings.Contains(body, "groups") {
				t.Errorf("debug shows the matches' groups as protojson:\n%s", body)
			}
		})
	}
	t.Run("OpenMetrics", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(probetest.Context(t), "GET", s.url+"/probe?module=tcp_connect&target="+live.Addr(), nil)
		req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") || !strings.HasSuffix(string(body), "# EOF\n") {
			t.Errorf("Content-Type %q, body\n%s", ct, body)
		}
	})
}

// TestScrapeRefusals plays a scraper the server refuses for what is wrong
// with the scrape itself: no token or a wrong one (401, before anything
// else, even a module's name, is looked at), an unknown module, another
// prober's, no target (400), too many scrapes (429). None of them dials.
func TestScrapeRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeModules(t, dir, "modules:\n  tcp_connect:\n    prober: tcp\n  http_2xx:\n    prober: http\n")
	srv := probetest.Start(t, probetest.WithTokens(t, map[string]string{"prometheus": "scrape-token-0123456789"}),
		probetest.WithConfig(func(c *server.Config) {
			c.Exporter.ModulesFile, c.Admission.ScrapeRate, c.Admission.ScrapeBurst = path, 0.001, 3
		}))
	s := newScraper(t, srv)
	tg := probetest.Listen(t, "127.0.0.1:0", nil)

	for _, tc := range []struct {
		name  string
		query url.Values
		token string
		code  int
		body  string
	}{
		{"no token", url.Values{"target": {tg.Addr()}}, "", http.StatusUnauthorized, "a valid bearer token is required"},
		{"a wrong token", url.Values{"target": {tg.Addr()}}, "scrape-token-9876543210", http.StatusUnauthorized, "a valid bearer token is required"},
		{"no token, unknown module", url.Values{"module": {"nope"}, "target": {"127.0.0.1"}}, "", http.StatusUnauthorized, "a valid bearer token is required"},
		{"unknown module", url.Values{"module": {"nope"}, "target": {tg.Addr()}}, "scrape-token-0123456789", http.StatusBadRequest, `Unknown module "nope"`},
		{"another prober's module", url.Values{"module": {"http_2xx"}, "target": {tg.Addr()}}, "scrape-token-0123456789", http.StatusBadRequest, "uses the http prober, which netprobe does not run"},
		{"no target", url.Values{"module": {"tcp_connect"}}, "scrape-token-0123456789", http.StatusBadRequest, "Target parameter is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.token = tc.token
			code, body := s.get(t, tc.query, nil)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("%d %q, want %d with %q", code, body, tc.code, tc.body)
			}
		})
	}
	if !tg.AcceptedNothing() {
		t.Error("a refused scrape dialled")
	}
	// The bucket of three: the refusals above took none of it, and a
	// scrape of a target that cannot be probed takes its share as any
	// probe does; the fourth is refused.
	s.token = "scrape-token-0123456789"
	s.probe(t, "tcp_connect", tg.Addr())
	s.probe(t, "tcp_connect", "127.0.0.1")
	s.probe(t, "tcp_connect", tg.Addr())
	if code, body := s.get(t, url.Values{"target": {tg.Addr()}}, nil); code != http.StatusTooManyRequests || !strings.Contains(body, "over its rate") {
		t.Errorf("past the scrape burst: %d %q", code, body)
	}
	// The scrape bucket is not the gRPC one.
	if _, err := client.New(srv.Conn).Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC without a token: %v", err)
	}
}

// TestScrapeTargetFailures scrapes targets that cannot be probed: each is
// a probe that failed, as blackbox_exporter answers it (200,
// probe_success 0, so that Prometheus has the series and the alert on
// probe_success == 0 fires), with the stage that failed in
// probe_failure_info, blackbox_exporter's address metrics where it has
// them, and the reason in debug=true's log. Nothing is dialled: the
// targets the policy denies listen, and accept nothing.
func TestScrapeTargetFailures(t *testing.T) {
	t.Parallel()
	path := writeModules(t, t.TempDir(), "modules:\n  tcp_connect:\n    prober: tcp\n  ip4_only:\n    prober: tcp\n    tcp:\n      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n")
	srv := probetest.Start(t, probetest.WithPolicy("deny 127.0.0.2", "caller prometheus allow 127.0.0.1"),
		probetest.WithTokens(t, map[string]string{"prometheus": "scrape-token-0123456789"}),
		probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile = path }))
	s := newScraper(t, srv)
	s.token = "scrape-token-0123456789"
	denied := probetest.Listen(t, "127.0.0.2:0", nil)
	notTheCallers := probetest.Listen(t, "127.0.0.3:0", nil)
	srv.DNS.SetAddrs("denied.test", netip.MustParseAddr("127.0.0.2"))
	deniedByName := fmt.Sprintf("denied.test:%d", denied.Port())

	// Debian's blackbox_exporter 0.23 gives these their address metrics
	// once the target is HOST:PORT, and none before.
	noAddress := []string{"probe_ip_protocol", "probe_ip_addr_hash", "probe_dns_lookup_time_seconds"}
	for _, tc := range []struct {
		name, module, target string
		stage, reason        string
		// family and hash are probe_ip_protocol's and probe_ip_addr_hash's.
		family, hash float64
		absent       []string
		log          string
	}{
		{"no port", "tcp_connect", "127.0.0.1", "STAGE_SERVICE_LOOKUP", "REASON_UNKNOWN_SERVICE", 0, 0, noAddress, `target \"127.0.0.1\" is not HOST:PORT: address 127.0.0.1: missing port in address`},
		{"an IPv6 address without brackets", "tcp_connect", "::1:8000", "STAGE_SERVICE_LOOKUP", "REASON_UNKNOWN_SERVICE", 0, 0, noAddress, "too many colons"},
		{"an unclosed bracket", "tcp_connect", "[::1:80", "STAGE_SERVICE_LOOKUP", "REASON_UNKNOWN_SERVICE", 0, 0, noAddress, "missing ']'"},
		{"a port out of range", "tcp_connect", "127.0.0.1:65536", "STAGE_SERVICE_LOOKUP", "REASON_UNKNOWN_SERVICE", 4, 3668918509, nil, "out of the ports' range 1-65535"},
		{"a port far out of range", "tcp_connect", "127.0.0.1:99999999999999999999", "STAGE_SERVICE_LOOKUP", "REASON_UNKNOWN_SERVICE", 4, 3668918509, nil, "target.service"},
		{"port 0", "tcp_connect", "127.0.0.1:0", "STAGE_SERVICE_LOOKUP", "REASON_UNKNOWN_SERVICE", 4, 3668918509, nil, "a port (1-65535) or a service name is required"},
		{"a service name with a space", "tcp_connect", "127.0.0.1:ht tp", "STAGE_SERVICE_LOOKUP", "REASON_UNKNOWN_SERVICE", 4, 3668918509, nil, "is not a valid service name"},
		{"an unknown service", "tcp_connect", "127.0.0.1:no-such-service", "STAGE_SERVICE_LOOKUP", "REASON_UNKNOWN_SERVICE", 4, 3668918509, nil, "unknown service no-such-service/tcp"},
		{"no host", "tcp_connect", ":80", "STAGE_RESOLVE", "REASON_NO_SUCH_HOST", 0, 0, nil, "target.host: is required"},
		{"a host that is not one", "tcp_connect", "bad host:80", "STAGE_RESOLVE", "REASON_NO_SUCH_HOST", 0, 0, nil, "is not an IP address or a valid DNS name"},
		{"a host far too long", "tcp_connect", strings.Repeat("a", 300) + ":80", "STAGE_RESOLVE", "REASON_NO_SUCH_HOST", 0, 0, nil, "is not an IP address or a valid DNS name"},
		{"a zone where none applies", "tcp_connect", "[::1%lo]:80", "STAGE_RESOLVE", "REASON_NO_SUCH_HOST", 0, 0, nil, "a zone applies to link-local addresses only"},
		{"an IPv6 address to an IPv4 module", "ip4_only", "[::1]:80", "STAGE_RESOLVE", "REASON_NO_SUCH_HOST", 0, 0, nil, "IPv4 asked for, but host ::1 is an IPv6 address"},
		{"a name that does not resolve", "tcp_connect", "nowhere.test:80", "STAGE_RESOLVE", "REASON_NO_SUCH_HOST", 0, 0, nil, "nowhere.test"},
		{"denied", "tcp_connect", denied.Addr(), "STAGE_POLICY", "REASON_DENIED", 4, 3618585652, nil, "rule=127.0.0.2 "},
		{"denied by name", "tcp_connect", deniedByName, "STAGE_POLICY", "REASON_DENIED", 4, 3618585652, nil, "rule=127.0.0.2 "},
		{"outside the caller's rules", "tcp_connect", notTheCallers.Addr(), "STAGE_POLICY", "REASON_DENIED", 4, 3635363271, nil, "denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			families := s.probe(t, tc.module, tc.target)
			want := map[string]string{"stage": tc.stage, "reason": tc.reason}
			if v, ok := metricValue(families["probe_failure_info"], want); !ok || v != 1 {
				t.Errorf("probe_failure_info%v = %v (present %v): %v", want, v, ok, families["probe_failure_info"])
			}
			for name, want := range map[string]float64{"probe_success": 0, "probe_failed_due_to_regex": 0, "probe_ip_protocol": tc.family, "probe_ip_addr_hash": tc.hash} {
				if slices.Contains(tc.absent, name) {
					continue
				}
				if v, ok := metricValue(families[name], nil); !ok || v != want {
					t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
				}
			}
			for _, name := range tc.absent {
				if families[name] != nil {
					t.Errorf("%s is present: %v", name, families[name])
				}
			}
			code, body := s.get(t, url.Values{"module": {tc.module}, "target": {tc.target}, "debug": {"true"}}, nil)
			if logs, _, _ := strings.Cut(body, "Timeout:"); code != http.StatusOK || !strings.Contains(logs, tc.log) {
				t.Errorf("debug=true: %d, no %q in its log:\n%s", code, tc.log, body)
			}
		})
	}
	if !denied.AcceptedNothing() || !notTheCallers.AcceptedNothing() {
		t.Error("a target the policy denies was dialled")
	}
	// Each is failing now on the page, those the probe service never saw
	// too, as given.
	_, page := s.page(t)
	if !strings.Contains(page, `Failing now: <span id="failing-count" class="bad">17</span>`) ||
		!strings.Contains(page, "<td data-label=\"target\"><code>::1:8000</code></td>") {
		t.Errorf("the page does not list the 17 failing targets:\n%s", page)
	}
}

// TestScrapeReload changes the module file: SIGHUP's reload takes a good
// file and keeps the modules of a bad one; a change is seen without one.
func TestScrapeReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeModules(t, dir, "modules:\n  a:\n    prober: tcp\n")
	srv := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile = path }))
	s := newScraper(t, srv)
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	s.probe(t, "a", tg.Addr())

	writeModules(t, dir, "modules:\n  b:\n    prober: tcp\n")
	if err := srv.Server.Reload(); err != nil {
		t.Fatal(err)
	}
	s.probe(t, "b", tg.Addr())
	if code, _ := s.get(t, url.Values{"module": {"a"}, "target": {tg.Addr()}}, nil); code != http.StatusBadRequest {
		t.Errorf("module a after the reload: %d", code)
	}

	writeModules(t, dir, "modules:\n  c:\n    prober: tcp\n    tcp:\n      colour: red\n")
	if err := srv.Server.Reload(); err == nil || !strings.Contains(err.Error(), "module c, line 5: unknown key \"colour\"") {
		t.Errorf("reloading a bad file: %v", err)
	}
	s.probe(t, "b", tg.Addr())

	// A change, seen within a second or so of the last look.
	writeModules(t, dir, "modules:\n  d:\n    prober: tcp\n")
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(probetest.Timeout)
	for {
		code, _ := s.get(t, url.Values{"module": {"d"}, "target": {tg.Addr()}}, nil)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("module d not seen: %d", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestScrapeStart refuses to start on a module file that does not load,
// or whose source address the server may not bind.
func TestScrapeStart(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ text, want string }{
		{"modules:\n  m:\n    prober: tcp\n    tcp:\n      tls: maybe\n", "line 5"},
		{"modules:\n  m:\n    prober: tcp\n    tcp:\n      source_ip_address: 127.0.0.2\n", "module m: source_ip_address 127.0.0.2 is not an address this server may bind"},
	} {
		path := writeModules(t, dir, tc.text)
		if _, err := server.New(server.Config{Exporter: exporter.Config{ModulesFile: path}}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		}
	}
	path := writeModules(t, dir, "modules:\n  m:\n    prober: tcp\n    tcp:\n      source_ip_address: 127.0.0.2\n")
	if _, err := server.New(server.Config{Exporter: exporter.Config{ModulesFile: path}, AllowSource: []string{"127.0.0.0/8"}}); err != nil {
		t.Errorf("a source the server may bind: %v", err)
	}
	// The modules' certificates have names of their own: an operator's
	// identity cannot pass for one.
	certFile, keyFile := probetest.WriteFiles(t, dir, probetest.NewCA(t).Issue(t, "x", false))
	if _, err := server.New(server.Config{ClientIdentities: []string{"module/m=" + certFile + "," + keyFile}}); err == nil || !strings.Contains(err.Error(), "are the modules' certificates") {
		t.Errorf("an identity named module/m: %v", err)
	}
}

// TestScrapeDefaultModule scrapes without a module: tcp_connect runs, the
// built-in one or the module file's; a file without one answers 400.
func TestScrapeDefaultModule(t *testing.T) {
	t.Parallel()
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	query := url.Values{"target": {live.Addr()}}
	s := newScraper(t, probetest.Start(t))
	if code, body := s.get(t, query, nil); code != http.StatusOK || !strings.Contains(body, "probe_success 1") {
		t.Errorf("no module, no module file: %d\n%s", code, body)
	}
	path := writeModules(t, t.TempDir(), "modules:\n  other:\n    prober: tcp\n")
	s = newScraper(t, probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile = path })))
	if code, body := s.get(t, query, nil); code != http.StatusBadRequest || body != "Unknown module \"tcp_connect\"\n" {
		t.Errorf("no module, a module file without tcp_connect: %d %q", code, body)
	}
}

// TestScrapesAtOnce runs scrapes of a target that answers and of one that
// refuses at the same time: each answers with its own probe's metrics,
// though they share the buffers their answers are written in (exporter's
// texts; under -race it fails when a buffer goes back to the pool before
// its answer is sent, checked).
func TestScrapesAtOnce(t *testing.T) {
	t.Parallel()
	srv := probetest.Start(t, probetest.Unlimited)
	s := newScraper(t, srv)
	open := probetest.Listen(t, "127.0.0.1:0", nil)
	closedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := closedLn.Addr().String()
	closedLn.Close()
	success := map[string]string{net.JoinHostPort("127.0.0.1", fmt.Sprint(open.Port())): "probe_success 1\n", closed: "probe_success 0\n"}
	ctx := probetest.Context(t)
	errs := make(chan error, 64)
	for i := range cap(errs) {
		go func() {
			target := closed
			if i%2 == 0 {
				target = net.JoinHostPort("127.0.0.1", fmt.Sprint(open.Port()))
			}
			req, err := http.NewRequestWithContext(ctx, "GET", s.url+"/probe?"+url.Values{"module": {"tcp_connect"}, "target": {target}}.Encode(), nil)
			if err != nil {
				errs <- err
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && (resp.StatusCode != http.StatusOK || !strings.Contains(string(body), success[target])) {
				err = fmt.Errorf("scrape of %s: %d, want 200 with %q in\n%s", target, resp.StatusCode, success[target], body)
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
