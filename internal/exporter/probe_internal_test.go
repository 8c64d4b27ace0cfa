package exporter

import (
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
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

// TestExpose holds expose to promhttp's handler with the options it
// stands for: the same status, headers and bytes for each Accept header a
// scraper may send (Prometheus's own, each format's, several at once,
// garbage, one too long to be a format) and each name[] filter, with
// the headers alternating so that negotiate's remembered answer is both
// right and wrong for the next one; and the same 500 when gathering
// fails.
func TestExpose(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "probe_x", Help: "A help with a \\ and a\nnewline."}, []string{"v"})
	for v, x := range map[string]float64{
		`quote " backslash \ newline` + "\n": math.NaN(),
		"ünïcødé":                            math.Inf(1),
		"":                                   math.Inf(-1),
		"small":                              1e-300,
		"large":                              123456789012,
		"negative zero":                      math.Copysign(0, -1),
	} {
		g.WithLabelValues(v).Set(x)
	}
	success := prometheus.NewGauge(prometheus.GaugeOpts{Name: "probe_success", Help: "Displays whether or not the probe was a success"})
	success.Set(1)
	reg.MustRegister(g, success)
	failing := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, _ := reg.Gather()
		return mfs, errors.New("metric probe_x given twice")
	})

	accepts := []string{
		"",
		"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
		"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
		"text/plain",
		"text/plain;version=0.0.4",
		"text/plain;version=1.0.0;escaping=dots",
		"text/plain;version=1.0.0;escaping=values",
		"application/openmetrics-text; version=0.0.1",
		"application/openmetrics-text;version=2.0.0",
		"application/openmetrics-text;version=1.0.0;escaping=underscores",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=compact-text",
		"*/*",
		"application/json",
		";;;,,=q;q=x,\x00",
		strings.Repeat("text/plain;q=0.1,", 4096),
	}
	queries := []string{"", "name[]=probe_success", "name%5B%5D=probe_x&name[]=probe_success", "name[]=nothing", "name[]="}
	type response struct {
		code   int
		header http.Header
		body   string
	}
	serve := func(h http.Handler, accept []string, query string) response {
		r := httptest.NewRequest(http.MethodGet, "/probe?"+query, nil)
		r.Header["Accept"] = accept
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return response{w.Code, w.Header(), w.Body.String()}
	}
	check := func(gatherer prometheus.Gatherer, accept []string, query string) {
		t.Helper()
		want := serve(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{EnableOpenMetrics: true, DisableCompression: true}), accept, query)
		got := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { expose(w, r, r.URL.Query(), gatherer) }), accept, query)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Accept %.80q, query %q:\ngot  %d %v\n%s\nwant %d %v\n%s", accept, query, got.code, got.header, got.body, want.code, want.header, want.body)
		}
	}
	for range 2 {
		for _, a := range accepts {
			for _, q := range queries {
				check(reg, []string{a}, q)
			}
		}
		slices.Reverse(accepts)
	}
	for i := range accepts {
		check(reg, []string{accepts[i], accepts[(i+1)%len(accepts)]}, "")
		check(reg, nil, "")
	}
	check(failing, []string{accepts[1]}, "")
	if got := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { expose(w, r, r.URL.Query(), failing) }), nil, ""); got.code != http.StatusInternalServerError || !strings.Contains(got.body, "metric probe_x given twice") {
		t.Errorf("gathering failed: %d %q, want 500 and the error", got.code, got.body)
	}
}
