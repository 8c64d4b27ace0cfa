package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
	"google.golang.org/grpc/metadata"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPage opens probed's page in a real headless Chromium after probes
// from gRPC and /probe by callers with tokens, and finds in the rendered
// page, first, the targets failing now, newest first, named by their
// callers, each linked to its report, without the target that failed and
// then succeeded; then the recent probes. It measures the page in
// Chromium at 1280 px and at a phone's 390 px: nothing is wider than the
// window, a caller's and a target's longest words included. It saves
// screenshots of both to $NETPROBE_ARTIFACTS (CI keeps them), or to a
// temporary directory.
func TestPage(t *testing.T) {
	chromium := probetest.Program(t, "chromium", "apt-get install chromium (Debian's package)")
	// A caller with a long name, and a target with a long one, as a page
	// that does not wrap would widen to show them.
	longCaller, longToken := "ops-"+strings.Repeat("x", 120), "long-0123456789abcdef"
	longHost := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + ".invalid"
	tokens := writeFile(t, "tokens", "alice "+aliceToken+"\nbob "+bobToken+"\n"+longCaller+" "+longToken+"\n")
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--tokens-file="+tokens))
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	// plain answers as SSH does, which a TLS handshake takes for a failure.
	plain := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
		c.Close()
	})
	closed := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
	c := client.New(dial(t, p.Addr))
	ctx := probetest.Context(t)
	bob := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bobToken)
	long := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+longToken)
	if _, err := c.Connect(bob, "tcp", plain.Addr(), client.ConnectOptions{TLS: &client.TLSOptions{InsecureSkipVerify: true}}); err == nil {
		t.Fatal("a TLS handshake with an SSH server succeeded")
	}
	if _, err := c.Connect(bob, "tcp", plain.Addr(), client.ConnectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect(bob, "tcp", closed, client.ConnectOptions{}); err == nil {
		t.Fatal("the closed port connected")
	}
	if _, err := c.Connect(long, "tcp", net.JoinHostPort(longHost, "443"), client.ConnectOptions{Timeout: 2 * time.Second}); err == nil {
		t.Fatal("a name under .invalid connected")
	}
	alice := http.Header{"Authorization": {"Bearer " + aliceToken}}
	for _, target := range []string{live.Addr(), closed} {
		if code, body := httpDo(t, "http://"+p.MetricsAddr+"/probe?module=tcp_connect&target="+target, alice); code != http.StatusOK {
			t.Fatalf("/probe of %s: %d\n%s", target, code, body)
		}
	}

	// Chromium reads the page through a proxy that gives alice's token,
	// and serves the page measuring it beside it, on the same origin.
	probed, err := url.Parse("http://" + p.MetricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(probed)
	mux := http.NewServeMux()
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Authorization", "Bearer "+aliceToken)
		proxy.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /measure", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, measurePage) })
	front := httptest.NewServer(mux)
	t.Cleanup(front.Close)

	dom := runChromium(t, chromium, "--dump-dom", front.URL+"/")
	doc, err := html.Parse(strings.NewReader(dom))
	if err != nil {
		t.Fatal(err)
	}
	var sections []string
	for _, h := range find(doc, func(n *html.Node) bool { return n.Data == "h2" }) {
		sections = append(sections, text(h))
	}
	if want := []string{"Failing now", "Recent probes", "Serving", "Fleet", "Target policy", "Limits", "Modules", "Config state"}; !slices.Equal(sections, want) {
		t.Errorf("the page's sections: %q, want %q", sections, want)
	}
	if tables := find(doc, func(n *html.Node) bool { return n.Data == "table" }); len(tables) == 0 || attr(tables[0], "id") != "failing" {
		t.Fatalf("the first table is not the failing targets")
	}
	failing := rowsOf(t, doc, "failing", 7, 1, 2, 3, 5)
	wantFailing := []string{
		"tcp " + closed + " | /probe tcp_connect | CONNECT / REFUSED / ECONNREFUSED | alice",
		"tcp " + net.JoinHostPort(longHost, "443") + " | gRPC Connect | RESOLVE / NO_SUCH_HOST | " + longCaller,
		"tcp " + closed + " | gRPC Connect | CONNECT / REFUSED / ECONNREFUSED | bob",
	}
	if strings.Join(failing, "\n") != strings.Join(wantFailing, "\n") {
		t.Errorf("failing now, newest first:\n%s\nwant\n%s", strings.Join(failing, "\n"), strings.Join(wantFailing, "\n"))
	}
	probes := rowsOf(t, doc, "probes", 8, 1, 2, 3, 4, 5)
	wantProbes := []string{
		"/probe tcp_connect | alice | tcp " + closed + " | failed | CONNECT / REFUSED / ECONNREFUSED",
		"/probe tcp_connect | alice | tcp " + live.Addr() + " | ok | ",
		"gRPC Connect | " + longCaller + " | tcp " + net.JoinHostPort(longHost, "443") + " | failed | RESOLVE / NO_SUCH_HOST",
		"gRPC Connect | bob | tcp " + closed + " | failed | CONNECT / REFUSED / ECONNREFUSED",
		"gRPC Connect | bob | tcp " + plain.Addr() + " | ok | ",
		"gRPC Connect | bob | tcp " + plain.Addr() + " | failed | TLS_HANDSHAKE / NOT_TLS",
	}
	if strings.Join(probes, "\n") != strings.Join(wantProbes, "\n") {
		t.Errorf("the recent probes, newest first:\n%s\nwant\n%s", strings.Join(probes, "\n"), strings.Join(wantProbes, "\n"))
	}
	if h := find(doc, func(n *html.Node) bool { return attr(n, "id") == "health" }); len(h) != 1 || text(h[0]) != "SERVING" {
		t.Errorf("health on the page: %v", h)
	}
	// A failing row says why in words, and links to its report: the
	// gRPC one's says why too.
	rows := find(doc, func(n *html.Node) bool { return n.Data == "tr" && attr(n, "data-id") != "" })
	if why := find(rows[0], func(n *html.Node) bool { return attr(n, "class") == "sub" }); len(why) != 3 || !strings.Contains(text(why[1]), "connection refused") {
		t.Errorf("the failing row's fine print: %q", text(rows[0]))
	}
	links := find(rows[2], func(n *html.Node) bool { return n.Data == "a" })
	if len(links) != 1 {
		t.Fatalf("a failing row has %d links", len(links))
	}
	if _, report := httpDo(t, front.URL+attr(links[0], "href"), nil); !strings.Contains(report, "REASON_REFUSED") || !strings.Contains(report, closed) {
		t.Errorf("the failed probe's report:\n%s", report)
	}

	dir := os.Getenv("NETPROBE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	for _, w := range []struct {
		name          string
		width, height int
	}{{"probed-page.png", 1280, 900}, {"probed-page-phone.png", 390, 844}} {
		t.Run(fmt.Sprintf("%dpx", w.width), func(t *testing.T) {
			dom := runChromium(t, chromium, "--dump-dom", fmt.Sprintf("%s/measure?width=%d", front.URL, w.width))
			doc, err := html.Parse(strings.NewReader(dom))
			if err != nil {
				t.Fatal(err)
			}
			result := find(doc, func(n *html.Node) bool { return attr(n, "id") == "result" })
			var m struct {
				ScrollWidth, ClientWidth, InnerWidth int
				Scrolling                            []string
			}
			if len(result) != 1 {
				t.Fatalf("the page was not measured:\n%s", dom)
			}
			if err := json.Unmarshal([]byte(text(result[0])), &m); err != nil {
				t.Fatalf("%v: %s", err, text(result[0]))
			}
			t.Logf("at %d px: %+v", w.width, m)
			if m.InnerWidth != w.width || m.ScrollWidth > m.ClientWidth || len(m.Scrolling) > 0 {
				t.Errorf("at %d px the page is %d px wide in a window of %d (inner %d), and these tables scroll: %q",
					w.width, m.ScrollWidth, m.ClientWidth, m.InnerWidth, m.Scrolling)
			}
			shot := filepath.Join(dir, w.name)
			runChromium(t, chromium, "--screenshot="+shot, fmt.Sprintf("--window-size=%d,%d", w.width, w.height), front.URL+"/")
			png, err := os.ReadFile(shot)
			if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
				t.Fatalf("no screenshot: %v", err)
			}
			t.Logf("screenshot: %s", shot)
		})
	}
}

// measurePage shows probed's page (through the test's proxy, on the same
// origin) in a frame as wide as its width parameter, and once it has
// loaded, writes into #result how wide the page's document is
// (scrollWidth) beside the frame's window (clientWidth, innerWidth), and
// which of its tables scroll in their own box. The script is the test's:
// probed's page has none.
const measurePage = `<!DOCTYPE html>
<html><head><style>body { margin: 0; } iframe { border: 0; display: block; }</style></head><body>
<script>
function measure(frame) {
  var d = frame.contentDocument, de = d.documentElement, scrolling = [];
  d.querySelectorAll('.box').forEach(function (b) {
    if (b.scrollWidth > b.clientWidth) scrolling.push(b.firstElementChild.id);
  });
  document.getElementById('result').textContent = JSON.stringify({
    scrollWidth: de.scrollWidth, clientWidth: de.clientWidth, innerWidth: frame.contentWindow.innerWidth, scrolling: scrolling});
}
var width = new URLSearchParams(location.search).get('width');
document.write('<iframe src="/" width="' + Number(width) + '" height="900" onload="measure(this)"></iframe>');
</script>
<pre id="result"></pre>
</body></html>
`

// rowsOf is the rows of the table with id in doc, each of cells cells, as
// the leading text of the cells at indexes (see lead), joined by " | ".
func rowsOf(t *testing.T, doc *html.Node, id string, cells int, indexes ...int) []string {
	t.Helper()
	tables := find(doc, func(n *html.Node) bool { return n.Data == "table" && attr(n, "id") == id })
	if len(tables) != 1 {
		t.Fatalf("%d tables #%s", len(tables), id)
	}
	var out []string
	for _, r := range find(tables[0], func(n *html.Node) bool { return n.Data == "tr" && attr(n, "data-id") != "" }) {
		tds := find(r, func(n *html.Node) bool { return n.Data == "td" })
		if len(tds) != cells {
			t.Fatalf("a row of #%s of %d cells: %s", id, len(tds), text(r))
		}
		var row []string
		for _, i := range indexes {
			row = append(row, lead(tds[i]))
		}
		out = append(out, strings.Join(row, " | "))
	}
	return out
}

// runChromium runs headless Chromium, as root and off the network, with
// args, and returns what it printed on stdout.
func runChromium(t *testing.T, chromium string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(probetest.Context(t), probetest.Timeout*3)
	defer cancel()
	var out, errOut bytes.Buffer
	// Chromium, loaded by the tests beside it, once crashed here (SIGSEGV):
	// a browser that dies of a signal gets one more try.
	for try := 0; ; try++ {
		cmd := exec.CommandContext(ctx, chromium, append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
			"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}, args...)...)
		out.Reset()
		errOut.Reset()
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if err == nil {
			return out.String()
		}
		if try == 0 && errors.As(err, &exit) && exit.ExitCode() == -1 {
			t.Logf("chromium died (%v); once more", err)
			continue
		}
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
}

// lead is the text under n but for its fine print (elements of class
// sub: a failure's message, a probe's peer and phases), trimmed.
func lead(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		for c := range n.ChildNodes() {
			switch {
			case c.Type == html.TextNode:
				b.WriteString(c.Data)
			case c.Type == html.ElementNode && attr(c, "class") != "sub":
				walk(c)
			}
		}
	}
	walk(n)
	return strings.TrimSpace(b.String())
}

// get is the body of a GET that must answer 200.
func get(t *testing.T, url string) string {
	t.Helper()
	code, body := httpGet(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", url, code, body)
	}
	return body
}

// find returns the element nodes under n that match, in document order.
func find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for c := range n.Descendants() {
		if c.Type == html.ElementNode && match(c) {
			out = append(out, c)
		}
	}
	return out
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
