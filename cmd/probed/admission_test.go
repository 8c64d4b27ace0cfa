package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netprobe/netprobe/internal/probetest"
)

// A way in's answer to a call: admitted (the probe ran) or refused for want
// of credentials, and when admitted, whom the audit line names.
type verdict struct {
	admitted bool
	caller   string
}

// credentials are what a call presents: authorization header values and a
// client certificate (nil for none).
type credentials struct {
	authorization []string
	cert          *tls.Certificate
}

// TestOneAdmission sends the same credentials through grpcurl to the gRPC
// port and through an HTTP client to /probe, and asserts that both ways in
// name the same caller and give the same verdict, the odd cases included:
// the bearer scheme in any case, spaces around the token, a token that is
// not one, two authorization headers, basic auth credentials nobody
// configured, and client certificates with and without a common name, with
// an empty subject and with two common names (both refused).
func TestOneAdmission(t *testing.T) {
	t.Parallel()
	target := probetest.Listen(t, "127.0.0.1:0", nil)
	basic := func(user string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":secret-password"))
	}

	t.Run("tokens", func(t *testing.T) {
		t.Parallel()
		p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--tokens-file="+tokensFile(t)))
		ways := ways{grpc: grpcWay{addr: p.Addr}, http: httpWay{base: "http://" + p.MetricsAddr}, p: p, target: target.Addr()}
		for _, tc := range []struct {
			name  string
			creds credentials
			want  verdict
		}{
			{"Bearer", credentials{authorization: []string{"Bearer " + aliceToken}}, verdict{true, "alice"}},
			{"bearer in lower case", credentials{authorization: []string{"bearer " + aliceToken}}, verdict{true, "alice"}},
			{"BEARER, spaces around the token", credentials{authorization: []string{"BEARER   " + bobToken + "  "}}, verdict{true, "bob"}},
			{"a token that is not one", credentials{authorization: []string{"Bearer not-a-token-of-ours"}}, verdict{}},
			{"no credentials", credentials{}, verdict{}},
			{"basic auth, which nobody configured", credentials{authorization: []string{basic("alice")}}, verdict{}},
			{"the token with no scheme", credentials{authorization: []string{aliceToken}}, verdict{}},
			{"two authorization headers", credentials{authorization: []string{"Bearer " + aliceToken, "Bearer " + bobToken}}, verdict{}},
		} {
			t.Run(tc.name, func(t *testing.T) { ways.check(t, tc.creds, tc.want) })
		}
	})

	t.Run("client certificates", func(t *testing.T) {
		t.Parallel()
		serverCA, clientCA := probetest.NewCA(t), probetest.NewCA(t)
		certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), serverCA.Issue(t, "probed", true))
		caFile := clientCA.WriteFile(t, t.TempDir())
		web := writeFile(t, "web.yml", fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: %s\n", certFile, keyFile, caFile))
		p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--tls-cert="+certFile, "--tls-key="+keyFile,
			"--tls-client-ca="+caFile, "--web-config-file="+web))
		serverCAFile := serverCA.WriteFile(t, t.TempDir())
		ways := ways{grpc: grpcWay{addr: p.Addr, caFile: serverCAFile}, http: httpWay{base: "https://" + p.MetricsAddr, roots: serverCA.Pool}, p: p, target: target.Addr()}
		carol := clientCA.Issue(t, "carol", false)
		noCN := clientCA.Issue(t, "", false, func(c *x509.Certificate) {
			c.Subject = pkix.Name{Organization: []string{"netprobe"}, OrganizationalUnit: []string{"ops"}}
		})
		// Both are signed by the CA, and verify: what they name is wrong.
		nobody := clientCA.Issue(t, "", false, func(c *x509.Certificate) {
			c.Subject = pkix.Name{}
			c.DNSNames = []string{"nobody.test"}
		})
		twoCNs := clientCA.Issue(t, "", false, func(c *x509.Certificate) {
			c.Subject = pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
				{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "team-a"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "team-b"}}}
		})
		// It would come before the serving line, which StartProbed waits
		// for.
		if p.Logged(metricsOpenWarning) != 0 {
			t.Error("probed warned that the metrics listener is open, when its web configuration wants client certificates")
		}
		for _, tc := range []struct {
			name  string
			creds credentials
			want  verdict
		}{
			{"a common name", credentials{cert: &carol}, verdict{true, "carol"}},
			{"no common name: the whole subject", credentials{cert: &noCN}, verdict{true, "OU=ops,O=netprobe"}},
			{"an empty subject: no one", credentials{cert: &nobody}, verdict{}},
			{"two common names: a guess", credentials{cert: &twoCNs}, verdict{}},
			{"a name claimed by basic auth, no users configured", credentials{cert: &carol, authorization: []string{basic("mallory")}}, verdict{true, "carol"}},
			{"a bearer token nobody asked for", credentials{cert: &carol, authorization: []string{"Bearer " + aliceToken}}, verdict{true, "carol"}},
		} {
			t.Run(tc.name, func(t *testing.T) { ways.check(t, tc.creds, tc.want) })
		}
	})
}

// metricsOpenWarning is what probed logs when mutual TLS guards gRPC and
// nothing guards the metrics listener.
const metricsOpenWarning = "the metrics listener (/probe, /metrics, the page) is open to whoever reaches it: --tls-client-ca guards gRPC only; give it client certificates or users in --web-config-file, or require --tokens-file"

// TestMutualTLSAloneWarns starts probed with mutual TLS on gRPC and no
// web configuration: it says at start that the metrics listener is open,
// which a user reading "mutual TLS" would not expect.
func TestMutualTLSAloneWarns(t *testing.T) {
	t.Parallel()
	ca := probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, "probed", true))
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--tls-cert="+certFile, "--tls-key="+keyFile,
		"--tls-client-ca="+ca.WriteFile(t, t.TempDir())))
	if !p.WaitLog(metricsOpenWarning) {
		t.Error("no warning that the metrics listener is open")
	}
}

// ways are the two ways into one probed.
type ways struct {
	grpc   grpcWay
	http   httpWay
	p      *probetest.Probed
	target string
}

// check sends creds both ways and asserts want of each.
func (w ways) check(t *testing.T, creds credentials, want verdict) {
	t.Helper()
	for name, way := range map[string]func(*testing.T, credentials, string) bool{"gRPC": w.grpc.call, "HTTP": w.http.call} {
		// Each call is told apart in the audit log by a target of its own:
		// the port differs, the address is the listener's.
		before := len(w.p.Audit())
		admitted := way(t, creds, w.target)
		if admitted != want.admitted {
			t.Errorf("%s: admitted %v, want %v", name, admitted, want.admitted)
			continue
		}
		if !admitted {
			continue
		}
		var line map[string]any
		probetest.Eventually(t, func() bool {
			audit := w.p.Audit()
			if len(audit) > before {
				line = audit[len(audit)-1]
				return true
			}
			return false
		}, func() string { return name + ": no audit line for the probe" })
		if got, _ := line["caller"].(string); got != want.caller {
			t.Errorf("%s: caller %q, want %q (audit line %v)", name, got, want.caller, line)
		}
	}
}

// grpcWay calls Connect through grpcurl, as a user would.
type grpcWay struct {
	addr   string
	caFile string // the server's CA, for TLS; plaintext when ""
}

func (g grpcWay) call(t *testing.T, creds credentials, target string) bool {
	t.Helper()
	host, port, _ := strings.Cut(target, ":")
	args := []string{"-format-error", "-d", fmt.Sprintf(`{"target":{"host":%q,"port":%s}}`, host, port)}
	if g.caFile == "" {
		args = append(args, "-plaintext")
	} else {
		args = append(args, "-cacert", g.caFile)
	}
	if creds.cert != nil {
		certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), *creds.cert)
		args = append(args, "-cert", certFile, "-key", keyFile)
	}
	for _, v := range creds.authorization {
		args = append(args, "-H", "authorization: "+v)
	}
	cmd := exec.CommandContext(probetest.Context(t), grpcurlBin, append(args, g.addr, "netprobe.v1.ProbeService/Connect")...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true
	case errors.As(err, &exit) && strings.Contains(out.String(), `"code": 16`):
		// UNAUTHENTICATED.
		return false
	}
	t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out.String())
	return false
}

// httpWay scrapes /probe with net/http.
type httpWay struct {
	base  string
	roots *x509.CertPool // the server's CA, for https
}

func (h httpWay) call(t *testing.T, creds credentials, target string) bool {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.roots}}
	if creds.cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*creds.cert}
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(probetest.Context(t), http.MethodGet, h.base+"/probe?module=tcp_connect&target="+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range creds.authorization {
		req.Header.Add("Authorization", v)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true
	case http.StatusUnauthorized:
		return false
	}
	t.Fatalf("GET /probe: %s\n%s", resp.Status, body)
	return false
}
