package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPrometheus points a real Prometheus at probed with the scrape
// configuration of blackbox_exporter's README (its relabelling unchanged,
// only the exporter's address) and blackbox_exporter's own blackbox.yml,
// unchanged: each of its tcp modules against a server that speaks its
// protocol, and a refused port and an expired certificate, read back
// through Prometheus's HTTP API. Beside it, Debian's blackbox_exporter
// with Debian's blackbox.yml, unchanged, and probed get the targets that
// cannot be probed (no port, one the policy denies, a name that does not
// resolve): both answer probe_success 0, so that Prometheus has the
// series, and the usual alert on probe_success == 0 fires, for both.
func TestPrometheus(t *testing.T) {
	prometheus := probetest.Program(t, "prometheus", "apt-get install prometheus (Debian's package)")
	bbe := probetest.Program(t, "prometheus-blackbox-exporter", "apt-get install prometheus-blackbox-exporter (Debian's package)")
	blackbox := startBlackbox(t, bbe, "/etc/prometheus/blackbox.yml")
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, dir)
	// The TLS targets are by name, as blackbox_exporter's are, and the
	// modules verify the certificate for it: mail.test, IPv4 only.
	dns := dnstest.Start(t)
	dns.SetAddrs("mail.test", netip.MustParseAddr("127.0.0.1"))
	// blackbox.yml as shipped, and after it two of its modules as they
	// would work: its pop3s_banner expects "^+OK", which RE2 reads as a
	// start of line, repeated, then "OK", and its postgresql sends the
	// SSLRequest with the newline every send gets (blackbox_exporter's
	// issue 1657); netprobe fails the two as blackbox_exporter does, and
	// says where.
	shipped, err := os.ReadFile("../../internal/modules/testdata/blackbox.yml")
	if err != nil {
		t.Fatal(err)
	}
	modules := filepath.Join(dir, "blackbox.yml")
	if err := os.WriteFile(modules, append(shipped, `  pop3s_banner_fixed:
    prober: tcp
    tcp:
      query_response:
      - expect: "^\\+OK"
      tls: true
  postgresql_fixed:
    prober: tcp
    tcp:
      query_response:
      - send_bytes: !!binary AAAACATSFi8=
      - expect_bytes: S
      - starttls: true
`...), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--dns-server="+dns.Addr, "--modules-file="+modules, "--deny=127.0.0.2")
	// pop3s_banner trusts the system's roots: here, the test's CA.
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+caFile)
	p := probetest.StartProbed(t, cmd)

	forMail := func(c *x509.Certificate) { c.DNSNames = []string{"mail.test"} }
	good := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "mail.test", true, forMail)}}
	expiredCert := ca.Issue(t, "mail.test", true, forMail, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Hour) })
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	closed := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
	pop3s := func(cfg *tls.Config) *probetest.Target {
		return probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			tc := tls.Server(c, cfg)
			if tc.Handshake() == nil {
				io.WriteString(tc, "+OK POP3 ready\r\n")
			}
			tc.Close()
		})
	}
	goodPOP3, expired := pop3s(good), pop3s(&tls.Config{Certificates: []tls.Certificate{expiredCert}})
	ssh := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		io.WriteString(c, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
		probetest.ReadAll(c)
		c.Close()
	})
	irc := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		defer c.Close()
		r := bufio.NewReader(c)
		for _, want := range []string{"NICK prober\n", "USER prober prober prober :prober\n"} {
			if l, _ := r.ReadString('\n'); l != want {
				return
			}
		}
		io.WriteString(c, "PING :k7x\r\n")
		if l, _ := r.ReadString('\n'); l == "PONG k7x\n" {
			io.WriteString(c, ":irc.test 001 prober :Welcome\r\n")
		}
		probetest.ReadAll(c)
	})
	postgres := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		defer c.Close()
		req := make([]byte, 8)
		if _, err := io.ReadFull(c, req); err != nil || string(req) != "\x00\x00\x00\x08\x04\xd2\x16\x2f" {
			return
		}
		io.WriteString(c, "S")
		tc := tls.Server(c, good)
		if tc.Handshake() == nil {
			probetest.ReadAll(tc)
		}
	})
	name := func(tg *probetest.Target) string { return fmt.Sprintf("mail.test:%d", tg.Port()) }

	job := func(module string, targets ...string) string {
		return probeJob("blackbox_"+module, p.MetricsAddr, module, targets...)
	}
	portless := "127.0.0.1"
	denied := fmt.Sprintf("127.0.0.2:%d", probetest.ClosedPort(t, "tcp", "127.0.0.2:0"))
	unresolvable := "nowhere.invalid:80"
	config := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" +
		job("tcp_connect", live.Addr(), closed) + job("pop3s_banner", name(goodPOP3), name(expired)) +
		job("ssh_banner", ssh.Addr()) + job("ssh_banner_extract", ssh.Addr()) + job("irc_banner", irc.Addr()) + job("postgresql", name(postgres)) +
		job("pop3s_banner_fixed", name(goodPOP3)) + job("postgresql_fixed", name(postgres)) +
		probeJob("probed_failing", p.MetricsAddr, "tcp_connect", portless, denied, unresolvable) +
		probeJob("blackbox_exporter_failing", blackbox, "tcp_connect", portless, denied, unresolvable)
	web := startPrometheus(t, prometheus, dir, config)

	success := func(job, instance string) string {
		return fmt.Sprintf(`probe_success{job="blackbox_%s",instance=%q}`, job, instance)
	}
	for _, tc := range []struct {
		query string
		want  float64
	}{
		{success("tcp_connect", live.Addr()), 1},
		{success("tcp_connect", closed), 0},
		{fmt.Sprintf(`probe_failure_info{instance=%q,stage="STAGE_CONNECT",reason="REASON_REFUSED",errno="ECONNREFUSED"}`, closed), 1},
		{success("pop3s_banner", name(goodPOP3)), 0},
		{fmt.Sprintf(`probe_failed_due_to_regex{job="blackbox_pop3s_banner",instance=%q}`, name(goodPOP3)), 1},
		{fmt.Sprintf(`probe_failure_info{job="blackbox_pop3s_banner",instance=%q,stage="STAGE_EXPECT",reason="REASON_NO_MATCH"}`, name(goodPOP3)), 1},
		{success("pop3s_banner_fixed", name(goodPOP3)), 1},
		{success("pop3s_banner", name(expired)), 0},
		{fmt.Sprintf(`probe_failure_info{instance=%q,stage="STAGE_TLS_HANDSHAKE",reason="REASON_CERTIFICATE_EXPIRED"}`, name(expired)), 1},
		{fmt.Sprintf(`probe_ssl_earliest_cert_expiry{instance=%q} < time()`, name(expired)), 1},
		{success("ssh_banner", ssh.Addr()), 1},
		{success("ssh_banner_extract", ssh.Addr()), 1},
		{fmt.Sprintf(`probe_expect_info{instance=%q,ssh_version="OpenSSH_9.2p1",ssh_comments="Debian-2"}`, ssh.Addr()), 1},
		{success("irc_banner", irc.Addr()), 1},
		{success("postgresql", name(postgres)), 0},
		{fmt.Sprintf(`probe_failure_info{job="blackbox_postgresql",instance=%q,stage="STAGE_TLS_HANDSHAKE"}`, name(postgres)), 1},
		{success("postgresql_fixed", name(postgres)), 1},
		{fmt.Sprintf(`probe_tls_version_info{job="blackbox_postgresql_fixed",instance=%q,version="TLS 1.3"}`, name(postgres)), 1},
		// Targets that cannot be probed: probe_success 0 from both
		// exporters, and netprobe's stage.
		{`min(up{job="probed_failing"})`, 1},
		{`min(up{job="blackbox_exporter_failing"})`, 1},
		{fmt.Sprintf(`probe_success{job="probed_failing",instance=%q}`, portless), 0},
		{fmt.Sprintf(`probe_success{job="blackbox_exporter_failing",instance=%q}`, portless), 0},
		{fmt.Sprintf(`probe_failure_info{job="probed_failing",instance=%q,stage="STAGE_SERVICE_LOOKUP"}`, portless), 1},
		{fmt.Sprintf(`probe_success{job="probed_failing",instance=%q}`, denied), 0},
		{fmt.Sprintf(`probe_success{job="blackbox_exporter_failing",instance=%q}`, denied), 0},
		{fmt.Sprintf(`probe_failure_info{job="probed_failing",instance=%q,stage="STAGE_POLICY",reason="REASON_DENIED"}`, denied), 1},
		{fmt.Sprintf(`probe_success{job="probed_failing",instance=%q}`, unresolvable), 0},
		{fmt.Sprintf(`probe_success{job="blackbox_exporter_failing",instance=%q}`, unresolvable), 0},
		{fmt.Sprintf(`probe_failure_info{job="probed_failing",instance=%q,stage="STAGE_RESOLVE",reason="REASON_NO_SUCH_HOST"}`, unresolvable), 1},
	} {
		if got := waitQuery(t, web, tc.query); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.query, got, tc.want)
		}
	}
	// And blackbox_exporter's address metrics, value for value.
	for _, target := range []string{denied, unresolvable} {
		for _, metric := range []string{"probe_ip_protocol", "probe_ip_addr_hash"} {
			q := func(job string) string { return fmt.Sprintf(`%s{job=%q,instance=%q}`, metric, job, target) }
			if got, want := waitQuery(t, web, q("probed_failing")), waitQuery(t, web, q("blackbox_exporter_failing")); got != want {
				t.Errorf("%s: probed %v, blackbox_exporter %v", q("probed_failing"), got, want)
			}
		}
	}
}

// waitQuery asks Prometheus for the value of an instant query until it
// has one, within 30 s: Prometheus took 5.7 s to start and give its first
// value on an idle machine, too close to probetest.Timeout.
// A comparison that holds is its left side's value; so that it reads as
// 1, the query's result is turned into a bool where it compares.
func waitQuery(t *testing.T, web, query string) float64 {
	t.Helper()
	q := strings.Replace(query, " < ", " < bool ", 1)
	var v float64
	probetest.EventuallyWithin(t, 30*time.Second, func() bool {
		var ok bool
		v, ok = instantQuery(t, web, q)
		return ok
	}, func() string { return "prometheus has no value for " + query })
	return v
}

// instantQuery runs query at Prometheus's API and returns its one value.
func instantQuery(t *testing.T, web, query string) (float64, bool) {
	return instantQueryVia(t, http.DefaultClient, web, query)
}

// instantQueryVia is instantQuery through client.
func instantQueryVia(t *testing.T, client *http.Client, web, query string) (float64, bool) {
	resp, err := client.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(query))
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

// startPrometheus runs prometheus (the binary bin) with config, its data
// in dir, until the test ends, showing its log if the test failed, and
// returns its web address.
func startPrometheus(t *testing.T, bin, dir, config string) string {
	t.Helper()
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	web := probetest.FreePort(t)
	prom := exec.Command(bin, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	var log strings.Builder
	prom.Stdout, prom.Stderr = &log, &log
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Kill()
		prom.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", log.String())
		}
	})
	return web
}

// probeJob is a Prometheus scrape job of module on targets through
// exporter's /probe, relabelled as blackbox_exporter's README has it.
func probeJob(job, exporter, module string, targets ...string) string {
	return fmt.Sprintf(`  - job_name: '%[1]s'
    metrics_path: /probe
    params:
      module: [%[2]s]
    static_configs:
      - targets: ['%[3]s']
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: %[4]s
`, job, module, strings.Join(targets, "', '"), exporter)
}
