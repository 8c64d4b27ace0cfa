package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/netprobe/netprobe/internal/probetest"
)

// TestWebConfig serves the metrics listener with exporter-toolkit web
// configurations, as Prometheus exporters are: TLS with basic auth users,
// then client certificates. The scraper of /probe is the user, or the
// certificate's common name; a name a request merely claims is none.
func TestWebConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, dir)
	certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, "probed", true))
	hash, err := bcrypt.GenerateFromPassword([]byte("scrape-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	target := probetest.Listen(t, "127.0.0.1:0", nil)
	clientCert := ca.Issue(t, "scraper-1", false)

	for _, tc := range []struct {
		name, config string
		cert         bool
		user, pass   string
		code         int
		caller       string
	}{
		{"no password", "basic", false, "", "", http.StatusUnauthorized, ""},
		{"a wrong password", "basic", false, "prometheus", "guess", http.StatusUnauthorized, ""},
		{"a user", "basic", false, "prometheus", "scrape-secret", http.StatusOK, "prometheus"},
		{"a certificate, and a name claimed", "mtls", true, "mallory", "x", http.StatusOK, "scraper-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", certFile, keyFile)
			switch tc.config {
			case "basic":
				config += fmt.Sprintf("basic_auth_users:\n  prometheus: %s\n", hash)
			case "mtls":
				config += fmt.Sprintf("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: %s\n", caFile)
			}
			file := filepath.Join(t.TempDir(), "web.yml")
			if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
				t.Fatal(err)
			}
			p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--web-config-file="+file))
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca.PEM)
			tlsConfig := &tls.Config{RootCAs: pool}
			if tc.cert {
				tlsConfig.Certificates = []tls.Certificate{clientCert}
			}
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}}
			do := func(path string) (int, string) {
				req, _ := http.NewRequestWithContext(probetest.Context(t), "GET", "https://"+p.MetricsAddr+path, nil)
				if tc.user != "" {
					req.SetBasicAuth(tc.user, tc.pass)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			code, body := do("/probe?module=tcp_connect&target=" + target.Addr())
			if code != tc.code || (code == http.StatusOK && !strings.Contains(body, "\nprobe_success 1\n")) {
				t.Fatalf("/probe: %d\n%s", code, body)
			}
			if tc.config == "basic" && tc.user == "" {
				// Without a password: health answers (the kubelet's probes
				// carry none), the page does not.
				if code, body := do("/healthz"); code != http.StatusOK || body != "SERVING\n" {
					t.Errorf("/healthz without a password: %d %q, want 200", code, body)
				}
				if code, _ := do("/"); code != http.StatusUnauthorized {
					t.Errorf("the page without a password: %d, want 401", code)
				}
			}
			if tc.caller == "" {
				return
			}
			if _, page := do("/"); !strings.Contains(page, "<td>"+tc.caller+"</td>") {
				t.Errorf("the page does not show the scraper %s:\n%s", tc.caller, page)
			}
		})
	}
	// Without a client certificate, the mTLS listener does not answer.
	file := filepath.Join(t.TempDir(), "web.yml")
	config := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: %s\n", certFile, keyFile, caFile)
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--web-config-file="+file))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp, err := c.Get("https://" + p.MetricsAddr + "/probe?target=" + target.Addr()); err == nil {
		resp.Body.Close()
		t.Errorf("a scrape without a client certificate: %d", resp.StatusCode)
	}
	// A web configuration that does not load stops probed from starting.
	bad := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(bad, []byte("tls_server_config:\n  cert_file: /nonexistent\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--web-config-file="+bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "web-config-file: "+bad+": missing one of key or key_file") {
		t.Errorf("a bad web config: %v\n%s", err, out)
	}
}
