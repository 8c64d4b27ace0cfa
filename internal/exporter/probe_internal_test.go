package exporter

import (
	"net/http"
	"strings"
	"testing"
	"time"
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
