package exporter

import (
	"net/http"
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
		if got := scrapeTimeout(h, offset, tc.module, max); got != tc.want {
			t.Errorf("header %q, module %v: %v, want %v", tc.header, tc.module, got, tc.want)
		}
	}
}
