package server

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/service"
)

// TestRecentProbes keeps the newest probes, newest first, and forgets the
// rest.
func TestRecentProbes(t *testing.T) {
	rp := newRecentProbes(3)
	for port := range uint32(5) {
		r := &service.Report{Method: "Connect", Target: &netprobev1.Target{Host: "h", Port: port + 1}}
		rp.add(context.Background(), r, targetText(r.Target), "ok")
	}
	var got []string
	for _, p := range rp.list() {
		got = append(got, p.Target)
	}
	if strings.Join(got, ",") != "tcp h:5,tcp h:4,tcp h:3" {
		t.Errorf("kept %q", got)
	}
	if rp.get(2) != nil || rp.get(5) == nil {
		t.Error("get finds a forgotten probe, or not a kept one")
	}
}

// TestPageEscapes renders what callers sent as text, never as markup.
func TestPageEscapes(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := service.WithCaller(context.Background(), `<img src=x onerror=alert(1)>`)
	r := &service.Report{Method: "Connect", Target: &netprobev1.Target{Host: "<script>alert(1)</script>", Port: 1}}
	s.recent.add(ctx, r, targetText(r.Target), "ok")
	rec := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	body := rec.Body.String()
	if rec.Code != 200 || strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("%d:\n%s", rec.Code, body)
	}
	rec = httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/probes/999", nil))
	if rec.Code != 404 {
		t.Errorf("an unknown report: %d", rec.Code)
	}
}
