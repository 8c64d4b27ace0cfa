package server_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// TestScrapeInvalidUTF8 scrapes a target whose banner is not UTF-8 into a
// module's label: the scrape answers its metrics, the label holding
// U+FFFD for the bytes that are not UTF-8. (Before, the handler panicked:
// an empty reply, and a stack in the log.)
func TestScrapeInvalidUTF8(t *testing.T) {
	t.Parallel()
	path := writeModules(t, t.TempDir(), `modules:
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
`)
	srv := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile = path }))
	s := newScraper(t, srv)
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		io.WriteString(c, "SSH-2.0-\xff\xfe x\xc3\r\n")
		probetest.WaitClosed(c)
	})
	families := s.probe(t, "ssh_banner_extract", tg.Addr())
	want := map[string]string{"ssh_version": "\uFFFD", "ssh_comments": "x\uFFFD"}
	if v, ok := metricValue(families["probe_expect_info"], want); !ok || v != 1 {
		t.Errorf("probe_expect_info%v = %v (present: %v), want 1: %v", want, v, ok, families["probe_expect_info"])
	}
}

// FuzzScrapeMetrics plays targets that send anything at all to scrapes of
// modules whose metrics carry what the target sent (the groups of an
// expect, in probe_expect_info's labels), through the real /probe handler
// and a real target socket. Whatever the bytes, the scrape answers 200
// with metrics Prometheus's parser reads, every label value valid UTF-8;
// and debug=true (module's high bit) answers 200 with a page of valid
// UTF-8 that shows what was received as escaped text, at most 1 KiB of it
// a step.
func FuzzScrapeMetrics(f *testing.F) {
	path := filepath.Join(f.TempDir(), "modules.yml")
	if err := os.WriteFile(path, []byte(`modules:
  banner:
    prober: tcp
    tcp:
      query_response:
      - expect: "^SSH-2.0-([^ -]+)(?: (.*))?$"
        labels:
        - name: ssh_version
          value: "${1}"
        - name: ssh_comments
          value: "${2}"
  line:
    prober: tcp
    tcp:
      query_response:
      - expect: "^(.*)$"
        labels:
        - name: line
          value: "${1}"
        - name: twice
          value: "${1}\\${1}\"${1}"
  dialogue:
    prober: tcp
    tcp:
      query_response:
      - expect: "^(.+)$"
        send: "${1}"
      - expect: "(?s)(.*)"
        labels:
        - name: rest
          value: "${1}"
`), 0o600); err != nil {
		f.Fatal(err)
	}
	srv := probetest.Start(f, probetest.WithConfig(probetest.Unlimited), probetest.WithConfig(func(c *server.Config) {
		c.Exporter.ModulesFile, c.Admission.ScrapeRate, c.Admission.ScrapeBurst = path, 1e9, 1e9
	}))
	hs := httptest.NewServer(srv.Metrics(f))
	f.Cleanup(hs.Close)
	// The target sends what the iteration sets, then closes.
	var sends atomic.Pointer[[]byte]
	tg := probetest.Listen(f, "127.0.0.1:0", func(c net.Conn) {
		c.Write(*sends.Load())
		c.Close()
	})
	modules := []string{"banner", "line", "dialogue"}
	for _, seed := range []string{
		"SSH-2.0-\xff\xfe\r\n",
		"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
		"\xc3\x28 not UTF-8\nsecond \xed\xa0\x80 line\n",
		"quote \" backslash \\ brace } newline\r\nand \x00 NUL\n",
		"",
	} {
		for i := range modules {
			f.Add(uint8(i), []byte(seed))
			f.Add(uint8(i)|0x80, []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, module uint8, data []byte) {
		sends.Store(&data)
		q := url.Values{"module": {modules[int(module&0x7f)%len(modules)]}, "target": {tg.Addr()}}
		debug := module&0x80 != 0
		if debug {
			q.Set("debug", "true")
		}
		resp, err := http.Get(hs.URL + "/probe?" + q.Encode())
		if err != nil {
			t.Fatalf("the scrape got no answer: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%d, %v\n%s", resp.StatusCode, err, body)
		}
		if debug {
			if !utf8.Valid(body) || !strings.Contains(string(body), "Dialogue") {
				t.Fatalf("debug=true answered\n%q", body)
			}
			// Each step shows 1 KiB of what it received, quoted: no
			// line of the dialogue is much longer.
			_, dialogue, _ := strings.Cut(string(body), "Dialogue")
			dialogue, _, _ = strings.Cut(dialogue, "Metrics that would have been returned")
			for _, line := range strings.Split(dialogue, "\n") {
				if len(line) > 5<<10 {
					t.Fatalf("a line of the dialogue of %d bytes:\n%s", len(line), line)
				}
			}
			return
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
		if err != nil {
			t.Fatalf("Prometheus does not read it: %v\n%s", err, body)
		}
		if families["probe_success"] == nil {
			t.Fatalf("no probe_success in\n%s", body)
		}
		for name, family := range families {
			for _, m := range family.GetMetric() {
				for _, l := range m.GetLabel() {
					if !utf8.ValidString(l.GetValue()) {
						t.Errorf("%s{%s=%q}: not UTF-8", name, l.GetName(), l.GetValue())
					}
				}
			}
		}
	})
}
