package main

import (
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netprobe/netprobe/internal/probetest"
)

// waitModules is a module file whose module "wait" waits for a line
// "ready", and "connect" only connects.
const waitModules = `modules:
  wait:
    prober: tcp
    tcp:
      query_response:
      - expect: "^ready$"
  connect:
    prober: tcp
`

// scrapeResult is a scrape's answer, or the error that replaced it.
type scrapeResult struct {
	code int
	body string
	err  error
}

// startScrape scrapes url in the background; the answer arrives on the
// channel.
func startScrape(t *testing.T, url string, header http.Header) <-chan scrapeResult {
	done := make(chan scrapeResult, 1)
	req, err := http.NewRequestWithContext(probetest.Context(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, header)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- scrapeResult{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- scrapeResult{code: resp.StatusCode, body: string(b), err: err}
	}()
	return done
}

// waitAccepted waits for n connections to tg.
func waitAccepted(t *testing.T, tg *probetest.Target, n int) {
	t.Helper()
	for range n {
		select {
		case <-tg.Accepted:
		case <-time.After(probetest.Timeout):
			t.Fatal("the scrapes' probes did not reach the target")
		}
	}
}

// waitExit waits for probed to exit 0.
func waitExit(t *testing.T, p *probetest.Probed) {
	t.Helper()
	select {
	case err := <-p.Exited:
		if err != nil {
			t.Errorf("probed exited with %v, want 0", err)
		}
	case <-time.After(probetest.Timeout):
		t.Fatal("probed did not exit")
	}
}

// TestDrainScrapes sends SIGTERM with three scrapes in flight: they
// finish within the grace period and answer in full, a new scrape is
// refused with 503 while they do, health says NOT_SERVING, and probed
// exits 0. (Before, probed exited at once and the three got an empty
// reply.)
func TestDrainScrapes(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		select {
		case <-release:
			io.WriteString(c, "ready\n")
		case <-time.After(probetest.Timeout):
		}
		probetest.WaitClosed(c)
	})
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--shutdown-grace=8s",
		"--modules-file="+writeFile(t, "modules.yml", waitModules)))
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	base := "http://" + p.MetricsAddr + "/probe?"
	timeout := http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"30"}}
	var scrapes []<-chan scrapeResult
	for range 3 {
		scrapes = append(scrapes, startScrape(t, base+url.Values{"module": {"wait"}, "target": {tg.Addr()}}.Encode(), timeout))
	}
	waitAccepted(t, tg, 3)

	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !p.WaitLog("draining the metrics listener") {
		t.Fatal("probed did not start draining")
	}
	if code, body := httpGet(t, base+url.Values{"module": {"connect"}, "target": {live.Addr()}}.Encode()); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Errorf("a new scrape while draining: %d %q, want 503", code, body)
	}
	if !live.AcceptedNothing() {
		t.Error("the scrape refused while draining probed its target")
	}
	if code, body := httpGet(t, "http://"+p.MetricsAddr+"/healthz"); code != http.StatusServiceUnavailable || body != "NOT_SERVING\n" {
		t.Errorf("/healthz while draining: %d %q, want 503 NOT_SERVING", code, body)
	}
	close(release)
	for i, s := range scrapes {
		r := <-s
		if r.err != nil || r.code != http.StatusOK || !strings.Contains(r.body, "\nprobe_success 1\n") {
			t.Errorf("scrape %d in flight at SIGTERM: %d, %v\n%s", i, r.code, r.err, r.body)
		}
	}
	waitExit(t, p)
}

// TestStatusCredentials plays a stranger reading the metrics listener of
// a probed with tokens: the page, a report and /metrics (which show
// callers, targets and rules) answer 401 without a valid token, as /probe
// does, and a Prometheus with the token reads them; /healthz needs none.
// --public-status shows them to anyone, and /probe still needs a token.
func TestStatusCredentials(t *testing.T) {
	t.Parallel()
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	policy := writeFile(t, "policy", "caller alice allow 127.0.0.0/8\n")
	alice := http.Header{"Authorization": {"Bearer " + aliceToken}}
	for _, tc := range []struct {
		name   string
		public bool
	}{{"tokens", false}, {"tokens and --public-status", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"--listen=127.0.0.1:0", "--tokens-file=" + tokensFile(t), "--policy-file=" + policy}
			if tc.public {
				args = append(args, "--public-status")
			}
			p := probetest.StartProbed(t, exec.Command(probedBin, args...))
			base := "http://" + p.MetricsAddr
			probe := base + "/probe?target=" + live.Addr()
			if code, body := httpDo(t, probe, alice); code != http.StatusOK {
				t.Fatalf("alice's scrape: %d\n%s", code, body)
			}
			for _, path := range []string{"/", "/probes/1", "/metrics"} {
				for _, cred := range []struct {
					name   string
					header http.Header
					ok     bool
				}{
					{"no token", nil, tc.public},
					{"a wrong token", http.Header{"Authorization": {"Bearer mallory-0123456789abcdef"}}, tc.public},
					{"a basic auth user", http.Header{"Authorization": {"Basic YWxpY2U6eA=="}}, tc.public},
					{"alice's token", alice, true},
				} {
					code, body := httpDo(t, base+path, cred.header)
					switch {
					case cred.ok && code != http.StatusOK:
						t.Errorf("%s with %s: %d, want 200\n%s", path, cred.name, code, body)
					case !cred.ok && (code != http.StatusUnauthorized || strings.Contains(body, "alice") || strings.Contains(body, live.Addr())):
						t.Errorf("%s with %s: %d, want 401 showing nothing\n%s", path, cred.name, code, body)
					}
				}
			}
			if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK || body != "SERVING\n" {
				t.Errorf("/healthz without a token: %d %q", code, body)
			}
			if code, _ := httpGet(t, probe); code != http.StatusUnauthorized {
				t.Errorf("/probe without a token: %d, want 401", code)
			}
		})
	}
}

// TestMetricsListenerHeaders checks every route of the metrics listener,
// answers and refusals alike: each says what it is (Content-Type) and
// that it is nothing else (X-Content-Type-Options: nosniff), so that a
// browser never reads a report, which repeats what targets sent, as a
// page.
func TestMetricsListenerHeaders(t *testing.T) {
	t.Parallel()
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--tokens-file="+tokensFile(t),
		"--modules-file="+writeFile(t, "modules.yml", waitModules)))
	alice := http.Header{"Authorization": {"Bearer " + aliceToken}}
	probe := "/probe?module=connect&target=" + live.Addr()
	for _, tc := range []struct {
		path        string
		header      http.Header
		code        int
		contentType string
	}{
		// The scrape first: the report of its probe is /probes/1.
		{probe, alice, http.StatusOK, "text/plain; version=0.0.4"},
		{probe + "&debug=true", alice, http.StatusOK, "text/plain; charset=utf-8"},
		{"/probe?module=nope&target=" + live.Addr(), alice, http.StatusBadRequest, "text/plain; charset=utf-8"},
		{probe, nil, http.StatusUnauthorized, "text/plain; charset=utf-8"},
		{"/", alice, http.StatusOK, "text/html; charset=utf-8"},
		{"/", nil, http.StatusUnauthorized, "text/plain; charset=utf-8"},
		{"/probes/1", alice, http.StatusOK, "application/json"},
		{"/probes/999", alice, http.StatusNotFound, "text/plain; charset=utf-8"},
		{"/metrics", alice, http.StatusOK, "text/plain; version=0.0.4"},
		{"/healthz", nil, http.StatusOK, "text/plain; charset=utf-8"},
		{"/nope", nil, http.StatusNotFound, "text/plain; charset=utf-8"},
	} {
		req, err := http.NewRequestWithContext(probetest.Context(t), http.MethodGet, "http://"+p.MetricsAddr+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		maps.Copy(req.Header, tc.header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.contentType) || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s (token: %v): %d, Content-Type %q, X-Content-Type-Options %q; want %d, %q, nosniff",
				tc.path, tc.header != nil, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Content-Type-Options"), tc.code, tc.contentType)
		}
	}
}
