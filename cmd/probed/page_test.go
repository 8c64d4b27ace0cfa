package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPage opens probed's page in a real headless Chromium after probes
// from gRPC and /probe, and finds them in the rendered page: each row's
// outcome, stage and reason, and a link to its report. It saves a
// screenshot of the page to $NETPROBE_ARTIFACTS (CI keeps it), or to a
// temporary directory.
func TestPage(t *testing.T) {
	chromium := probetest.Program(t, "chromium", "apt-get install chromium (Debian's package)")
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0"))
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	closed := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
	c := client.New(dial(t, p.Addr))
	ctx := probetest.Context(t)
	if _, err := c.Connect(ctx, "tcp", live.Addr(), client.ConnectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect(ctx, "tcp", closed, client.ConnectOptions{}); err == nil {
		t.Fatal("the closed port connected")
	}
	get(t, "http://"+p.MetricsAddr+"/probe?module=tcp_connect&target="+live.Addr())

	page := "http://" + p.MetricsAddr + "/"
	dom := runChromium(t, chromium, "--dump-dom", page)
	doc, err := html.Parse(strings.NewReader(dom))
	if err != nil {
		t.Fatal(err)
	}
	rows := find(doc, func(n *html.Node) bool { return n.Data == "tr" && attr(n, "data-id") != "" })
	var got []string
	for _, r := range rows {
		cells := find(r, func(n *html.Node) bool { return n.Data == "td" })
		if len(cells) != 13 {
			t.Fatalf("a row of %d cells: %s", len(cells), text(r))
		}
		got = append(got, strings.Join([]string{text(cells[1]), text(cells[3]), text(cells[4]), text(cells[5])}, " | "))
	}
	want := []string{
		"/probe tcp_connect | tcp " + live.Addr() + " | ok | ",
		"gRPC Connect | tcp " + closed + " | failed | CONNECT / REFUSED / ECONNREFUSED",
		"gRPC Connect | tcp " + live.Addr() + " | ok | ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the page's probes, newest first:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if h := find(doc, func(n *html.Node) bool { return attr(n, "id") == "health" }); len(h) != 1 || text(h[0]) != "SERVING" {
		t.Errorf("health on the page: %v", h)
	}
	// Each row links to its report: the failed one's says why.
	links := find(rows[1], func(n *html.Node) bool { return n.Data == "a" })
	if len(links) != 1 {
		t.Fatalf("the failed row has %d links", len(links))
	}
	report := get(t, "http://"+p.MetricsAddr+attr(links[0], "href"))
	if !strings.Contains(report, "REASON_REFUSED") || !strings.Contains(report, closed) {
		t.Errorf("the failed probe's report:\n%s", report)
	}

	dir := os.Getenv("NETPROBE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "probed-page.png")
	runChromium(t, chromium, "--screenshot="+shot, "--window-size=1400,900", page)
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("no screenshot: %v", err)
	}
	t.Logf("screenshot: %s", shot)
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
