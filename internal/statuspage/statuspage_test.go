package statuspage

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/html"
	"google.golang.org/grpc/peer"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/audit"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/service"
)

// serve returns the answer to a GET of path from the page of rec and st.
func serve(t *testing.T, rec *audit.Recorder, st Status, path string) *httptest.ResponseRecorder {
	t.Helper()
	if st.Modules == nil {
		st.Modules = modules.Defaults()
	}
	mux := http.NewServeMux()
	New(rec, func() Status { return st }, slog.New(slog.DiscardHandler)).Routes(mux, func(h http.Handler) http.Handler { return h })
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w
}

func newRecorder() *audit.Recorder {
	return audit.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
}

// refused is the report of a Connect to host:port that was refused.
func refused(host string, port uint32) service.Report {
	return service.Report{Method: "Connect", Target: &netprobev1.Target{Host: host, Port: port},
		Error: &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED"}}
}

// TestPageEscapes renders what callers, targets, modules and files bring
// as text, never as markup, in every section, and answers an unknown
// report 404. The page has no script of its own: any <script is an
// injection.
func TestPageEscapes(t *testing.T) {
	rec := newRecorder()
	ctx := service.WithCaller(context.Background(), `<img src=x onerror=alert(1)>`)
	rec.Observe(ctx, service.Report{Method: "Connect", Target: &netprobev1.Target{Host: "<script>alert(1)</script>", Port: 1}})
	failure := refused(`"><script>alert(2)</script>`, 2)
	failure.Error.Message = `</td></tr></table><script>alert(3)</script>`
	rec.Observe(audit.WithVia(ctx, "/probe <svg onload=alert(4)>"), failure)
	anonymous := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 5}})
	rec.Observe(anonymous, refused("<iframe src=//evil.example>", 3))
	st := Status{Files: []FileState{{Name: "<b>policy</b>", Path: `/etc/"><script>alert(5)</script>`, Loaded: time.Now(), Err: "<iframe src=//evil.example/err>"}}}

	w := serve(t, rec, st, "/")
	body := w.Body.String()
	if w.Code != 200 {
		t.Fatalf("%d:\n%s", w.Code, body)
	}
	for _, markup := range []string{"<script", "<img", "<svg", "<iframe", "<b>policy"} {
		if strings.Contains(body, markup) {
			t.Errorf("the page holds %s:\n%s", markup, body)
		}
	}
	for _, text := range []string{
		"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;",
		"&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;", "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;script&gt;alert(3)&lt;/script&gt;",
		"/probe &lt;svg onload=alert(4)&gt;", "anonymous from 192.0.2.7:5",
		"&lt;b&gt;policy&lt;/b&gt;", "/etc/&#34;&gt;&lt;script&gt;alert(5)&lt;/script&gt;", "&lt;iframe src=//evil.example/err&gt;",
	} {
		if !strings.Contains(body, text) {
			t.Errorf("the page lacks %s:\n%s", text, body)
		}
	}
	if w := serve(t, rec, st, "/probes/999"); w.Code != 404 {
		t.Errorf("an unknown report: %d", w.Code)
	}
}

// failingRows is the failing-now table of page as "target | via |
// failure | failures in a row | caller" a row, each row's report link checked.
func failingRows(t *testing.T, page string) []string {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode || n.Data != "table" || attr(n, "id") != "failing" {
			continue
		}
		for tr := range n.Descendants() {
			if tr.Type != html.ElementNode || tr.Data != "tr" || attr(tr, "data-id") == "" {
				continue
			}
			var cells []string
			var href string
			for td := range tr.Descendants() {
				switch {
				case td.Type == html.ElementNode && td.Data == "td":
					cells = append(cells, text(td))
				case td.Type == html.ElementNode && td.Data == "a":
					href = attr(td, "href")
				}
			}
			if len(cells) != 7 || href != "/probes/"+attr(tr, "data-id") {
				t.Fatalf("a failing row of %d cells linking to %q: %q", len(cells), href, cells)
			}
			cells[4] = strings.Fields(cells[4])[0] // the count, without the time of the last
			rows = append(rows, strings.Join(cells[1:6], " | "))
		}
	}
	return rows
}

// TestPageFailingNow renders the targets failing now, from gRPC and
// /probe alike, above the recent probes: the newest run of failures
// first, since its first failure, a target that succeeded again gone;
// past 100 the page says how many more, and past audit.FailingKept how
// many were forgotten.
func TestPageFailingNow(t *testing.T) {
	rec := newRecorder()
	alice := service.WithCaller(context.Background(), "alice")
	rec.Observe(alice, refused("a", 1))
	rec.Observe(alice, refused("b", 1))
	rec.Observe(audit.WithVia(alice, "/probe tcp_connect"), refused("a", 1))
	rec.Observe(alice, refused("a", 1))
	rec.Observe(alice, service.Report{Method: "Connect", Target: &netprobev1.Target{Host: "b", Port: 1}})

	page := serve(t, rec, Status{}, "/").Body.String()
	got := failingRows(t, page)
	want := []string{
		"tcp a:1 | /probe tcp_connect | CONNECT / REFUSED / ECONNREFUSED | 1 | alice",
		"tcp a:1 | gRPC Connect | CONNECT / REFUSED / ECONNREFUSED | 2 | alice",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("failing now:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if f, p := strings.Index(page, `id="failing"`), strings.Index(page, `id="probes"`); f < 0 || p < f {
		t.Errorf("failing now is not above the recent probes")
	}

	for i := range audit.FailingKept + 1 {
		rec.Observe(alice, refused(fmt.Sprintf("h%d", i), 1))
	}
	page = serve(t, rec, Status{}, "/").Body.String()
	if got := failingRows(t, page); len(got) != failingListed || !strings.HasPrefix(got[0], fmt.Sprintf("tcp h%d:1 |", audit.FailingKept)) {
		t.Errorf("the page lists %d failing targets, the first %q", len(got), got[:1])
	}
	for _, want := range []string{
		fmt.Sprintf("And %d more failing since earlier, not listed here.", audit.FailingKept-failingListed),
		"3 failing targets were forgotten",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page does not say %q", want)
		}
	}
}

// TestPageFailingPath shows, in a failing target's row, where its path
// stopped when the probe traced it; as text, whatever the report's hops
// held.
func TestPageFailingPath(t *testing.T) {
	rec := newRecorder()
	traced := func(host string, hops ...*netprobev1.Hop) service.Report {
		r := refused(host, 82)
		r.Path = &netprobev1.Path{Hops: hops, End: netprobev1.PathEnd_PATH_END_SILENCE}
		r.Connect = &netprobev1.ConnectResponse{Error: r.Error, Path: r.Path}
		return r
	}
	r1 := &netprobev1.Hop{Ttl: 1, Address: "198.18.1.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED, Sent: 1, Answered: 1}
	silent := &netprobev1.Hop{Ttl: 2, Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE, Sent: 1}
	rec.Observe(context.Background(), refused("untraced", 82))
	rec.Observe(context.Background(), traced("dropped", r1, silent))
	rec.Observe(context.Background(), traced("markup", &netprobev1.Hop{Ttl: 1, Address: "<script>alert(6)</script>", Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED}))
	page := serve(t, rec, Status{}, "/").Body.String()
	got := failingRows(t, page)
	want := []string{
		"tcp markup:82 | gRPC Connect | CONNECT / REFUSED / ECONNREFUSED path stopped after hop 1; nothing beyond it | 1 | anonymous",
		"tcp dropped:82 | gRPC Connect | CONNECT / REFUSED / ECONNREFUSED path stopped after 198.18.1.1 (hop 1); nothing beyond it | 1 | anonymous",
		"tcp untraced:82 | gRPC Connect | CONNECT / REFUSED / ECONNREFUSED | 1 | anonymous",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("failing now:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "alert(6)") {
		t.Errorf("the page holds the hop's markup:\n%s", page)
	}
}

// TestPageModuleTrace says which modules trace the path, and how.
func TestPageModuleTrace(t *testing.T) {
	set, _, err := modules.Parse([]byte("modules:\n  traced:\n    prober: tcp\n    timeout: 2s\n    netprobe:\n      trace: {when: always, max_hops: 12, probes_per_hop: 3}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	page := serve(t, newRecorder(), Status{Modules: set}, "/").Body.String()
	if want := "timeout 2s, traced always (12 hops at most, 3 probes a hop, within 5s)"; !strings.Contains(page, want) {
		t.Errorf("the page lacks %q:\n%s", want, page)
	}
}

// TestPageFiles shows each file's state, and "none" when probed reported
// none.
func TestPageFiles(t *testing.T) {
	if body := serve(t, newRecorder(), Status{}, "/").Body.String(); !strings.Contains(body, `<p id="files">none</p>`) {
		t.Errorf("no files, and the page does not say none:\n%s", body)
	}
	loaded := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	body := serve(t, newRecorder(), Status{Files: []FileState{
		{Name: "policy", Path: "/etc/netprobe/policy.yml", Loaded: loaded, OK: true},
		{Name: "modules", Path: "/etc/netprobe/modules.yml", Loaded: loaded, Err: "line 3: mapping values are not allowed"},
	}}, "/").Body.String()
	for _, want := range []string{
		`<td data-label="file">policy</td>`, `<code>/etc/netprobe/policy.yml</code>`, `2026-01-02 03:04:05`, `<span class="good">loaded</span>`,
		`<span class="bad">the last reload failed; the last load stays in use</span> <span class="sub">line 3: mapping values are not allowed</span>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// text is the text under n, trimmed.
func text(n *html.Node) string {
	var b strings.Builder
	for c := range n.Descendants() {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return strings.TrimSpace(b.String())
}
