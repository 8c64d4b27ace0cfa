package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPrometheus points a real Prometheus at probed with the scrape
// configuration of blackbox_exporter's README (its relabelling unchanged,
// only the exporter's address), over a live target, a refused port, an
// expired certificate and a banner check, and reads the outcome back
// through Prometheus's HTTP API.
func TestPrometheus(t *testing.T) {
	prometheus := probetest.Program(t, "prometheus", "apt-get install prometheus (Debian's package)")
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	modules := filepath.Join(dir, "blackbox.yml")
	if err := os.WriteFile(modules, []byte(`modules:
  tcp_connect:
    prober: tcp
  tls_connect:
    prober: tcp
    tcp:
      tls: true
      tls_config:
        ca_file: ca.pem
        server_name: localhost
  ssh_banner:
    prober: tcp
    tcp:
      query_response:
      - expect: "^SSH-2.0-"
      - send: "SSH-2.0-blackbox-ssh-check"
  http_2xx:
    prober: http
`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--modules-file="+modules))

	live := probetest.Listen(t, "127.0.0.1:0", nil)
	closed := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
	expiredCert := ca.Issue(t, "localhost", true, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Hour) })
	expired := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{expiredCert}})
		tc.Handshake()
		tc.Close()
	})
	ssh := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		io.WriteString(c, "SSH-2.0-OpenSSH_9.2p1\r\n")
		probetest.ReadAll(c)
		c.Close()
	})

	job := func(module string, targets ...string) string {
		return fmt.Sprintf(`  - job_name: 'blackbox_%[1]s'
    metrics_path: /probe
    params:
      module: [%[1]s]
    static_configs:
      - targets: ['%[2]s']
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: %[3]s
`, module, strings.Join(targets, "', '"), p.MetricsAddr)
	}
	config := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" +
		job("tcp_connect", live.Addr(), closed) + job("tls_connect", expired.Addr()) + job("ssh_banner", ssh.Addr())
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	web := probetest.FreePort(t)
	cmd := exec.Command(prometheus, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", log.String())
		}
	})

	for _, tc := range []struct {
		query string
		want  float64
	}{
		{fmt.Sprintf(`probe_success{job="blackbox_tcp_connect",instance=%q}`, live.Addr()), 1},
		{fmt.Sprintf(`probe_success{job="blackbox_tcp_connect",instance=%q}`, closed), 0},
		{fmt.Sprintf(`probe_failure_info{instance=%q,stage="STAGE_CONNECT",reason="REASON_REFUSED",errno="ECONNREFUSED"}`, closed), 1},
		{fmt.Sprintf(`probe_success{job="blackbox_tls_connect",instance=%q}`, expired.Addr()), 0},
		{fmt.Sprintf(`probe_failure_info{instance=%q,stage="STAGE_TLS_HANDSHAKE",reason="REASON_CERTIFICATE_EXPIRED"}`, expired.Addr()), 1},
		{fmt.Sprintf(`probe_ssl_earliest_cert_expiry{instance=%q} < time()`, expired.Addr()), 1},
		{fmt.Sprintf(`probe_success{job="blackbox_ssh_banner",instance=%q}`, ssh.Addr()), 1},
		{fmt.Sprintf(`probe_failed_due_to_regex{job="blackbox_ssh_banner",instance=%q}`, ssh.Addr()), 0},
	} {
		if got := waitQuery(t, web, tc.query); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.query, got, tc.want)
		}
	}
}

// waitQuery asks Prometheus for the value of an instant query until it
// has one (the first scrapes take a moment), within the test's timeout.
// A comparison that holds is its left side's value; so that it reads as
// 1, the query's result is turned into a bool where it compares.
func waitQuery(t *testing.T, web, query string) float64 {
	t.Helper()
	q := query
	if strings.Contains(q, " < ") {
		q = strings.Replace(q, " < ", " < bool ", 1)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if v, ok := instantQuery(t, web, q); ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus has no value for %s", query)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// instantQuery runs query at Prometheus's API and returns its one value.
func instantQuery(t *testing.T, web, query string) (float64, bool) {
	resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Status != "success" || len(body.Data.Result) != 1 {
		return 0, false
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	var v float64
	if _, err := fmt.Sscan(s, &v); err != nil {
		t.Fatalf("value %q of %s", s, query)
	}
	return v, true
}
