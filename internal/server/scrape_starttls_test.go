package server_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/netprobe/netprobe/internal/probetest"
)

// TestScrapeStartTLSRefused scrapes the built-in PROTO_starttls modules
// against servers that refuse STARTTLS (or turn the client away at their
// greeting) and then hold the connection open. With no scrape timeout
// the probe's is 120 s, longer than the test may take; each scrape
// answers at once with probe_success 0, probe_failed_due_to_regex 1 and
// the stage in probe_failure_info, as blackbox_exporter's query_response
// answers when the server closes after refusing (held open, it waits for
// its timeout and fails without the regex). The debug log quotes the
// refusal.
func TestScrapeStartTLSRefused(t *testing.T) {
	t.Parallel()
	s := newScraper(t, probetest.Start(t))
	line := func(r *bufio.Reader, prefix string) bool {
		l, err := r.ReadString('\n')
		return err == nil && strings.HasPrefix(l, prefix)
	}
	say := func(c net.Conn, text string) bool {
		_, err := io.WriteString(c, text)
		return err == nil
	}
	for _, tc := range []struct {
		module string
		serve  func(c net.Conn, r *bufio.Reader) bool
		// refusal is what the debug log quotes.
		refusal string
	}{
		{"smtp_starttls", func(c net.Conn, r *bufio.Reader) bool {
			return say(c, "220 mail.test ESMTP\r\n") && line(r, "EHLO ") && say(c, "250-mail.test\r\n250 8BITMIME\r\n") &&
				line(r, "STARTTLS") && say(c, "454 4.7.0 TLS not available due to local problem\r\n")
		}, `454 4.7.0 TLS not available due to local problem\\r\\n`},
		{"imap_starttls", func(c net.Conn, r *bufio.Reader) bool {
			return say(c, "* OK ready\r\n") && line(r, "a001 STARTTLS") && say(c, "a001 NO STARTTLS not available\r\n")
		}, `a001 NO STARTTLS not available\\r\\n`},
		{"pop3_starttls", func(c net.Conn, r *bufio.Reader) bool {
			return say(c, "-ERR [SYS/TEMP] too many connections\r\n")
		}, `-ERR [SYS/TEMP] too many connections\\r\\n`},
		{"ftp_starttls", func(c net.Conn, r *bufio.Reader) bool {
			return say(c, "220 FTP ready\r\n") && line(r, "AUTH TLS") && say(c, "530 Please login with USER and PASS.\r\n")
		}, `530 Please login with USER and PASS.\\r\\n`},
		{"postgres_starttls", func(c net.Conn, r *bufio.Reader) bool {
			_, err := io.ReadFull(r, make([]byte, 8))
			return err == nil && say(c, "N")
		}, `N`},
		{"ldap_starttls", func(c net.Conn, r *bufio.Reader) bool {
			_, err := io.ReadFull(r, make([]byte, 31))
			return err == nil && say(c, "\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x02\x04\x00\x04\x00")
		}, `x\\a\\n\\x01\\x02`},
	} {
		t.Run(tc.module, func(t *testing.T) {
			t.Parallel()
			tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
				c.SetDeadline(time.Now().Add(probetest.Timeout))
				if tc.serve(c, bufio.NewReader(c)) {
					probetest.ReadAll(c)
				}
				c.Close()
			})
			families := s.probe(t, tc.module, tg.Addr())
			for _, w := range []struct {
				family string
				labels map[string]string
				value  float64
			}{
				{"probe_success", nil, 0},
				{"probe_failed_due_to_regex", nil, 1},
				{"probe_failure_info", map[string]string{"stage": "STAGE_EXPECT", "reason": "REASON_NO_MATCH", "errno": ""}, 1},
			} {
				if got, ok := metricValue(families[w.family], w.labels); !ok || got != w.value {
					t.Errorf("%s%v = %v (present: %v), want %v", w.family, w.labels, got, ok, w.value)
				}
			}
			code, body := s.get(t, url.Values{"module": {tc.module}, "target": {tg.Addr()}, "debug": {"true"}}, nil)
			if want := `the target refused with \"` + tc.refusal + `\"`; code != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("debug: %d, no %s in\n%s", code, want, body)
			}
		})
	}
}
