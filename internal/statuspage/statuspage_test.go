package statuspage

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/audit"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/service"
)

// TestPageEscapes renders what callers sent as text, never as markup, and
// answers an unknown report 404.
func TestPageEscapes(t *testing.T) {
	rec := audit.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	ctx := service.WithCaller(context.Background(), `<img src=x onerror=alert(1)>`)
	rec.Observe(ctx, service.Report{Method: "Connect", Target: &netprobev1.Target{Host: "<script>alert(1)</script>", Port: 1}})
	mux := http.NewServeMux()
	New(rec, func() Status { return Status{Modules: modules.Defaults()} }, slog.New(slog.DiscardHandler)).Routes(mux, func(h http.Handler) http.Handler { return h })
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	body := w.Body.String()
	if w.Code != 200 || strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("%d:\n%s", w.Code, body)
	}
	w = httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", "/probes/999", nil))
	if w.Code != 404 {
		t.Errorf("an unknown report: %d", w.Code)
	}
}
