//go:build unix

package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestReload changes each file probed reads under the running binary and
// sees the change take effect the three ways there are (the file's own
// change, POST /-/reload, SIGHUP); a file broken on the way keeps what it
// held in use, and says so in the metrics and in POST /-/reload's answer,
// as blackbox_exporter's does.
func TestReload(t *testing.T) {
	t.Parallel()
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	other := probetest.Listen(t, "127.0.0.2:0", nil)
	modules := writeFile(t, "modules.yml", "modules:\n  plain:\n    prober: tcp\n")
	policy := writeFile(t, "policy", "caller alice allow 127.0.0.1\n")
	tokens := tokensFile(t)
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0",
		"--modules-file="+modules, "--policy-file="+policy, "--tokens-file="+tokens))
	base := "http://" + p.MetricsAddr
	alice := http.Header{"Authorization": {"Bearer " + aliceToken}}

	// reloaded is the reload metrics of each file: whether its last load
	// worked, and when the last that did was.
	reloaded := func() map[string][2]float64 {
		m := scrape(t, base+"/metrics")
		out := map[string][2]float64{}
		for _, f := range []string{"modules-file", "policy-file", "tokens-file"} {
			ok, _ := metricValue(m["netprobe_config_last_reload_successful"], map[string]string{"file": f})
			at, _ := metricValue(m["netprobe_config_last_reload_success_timestamp_seconds"], map[string]string{"file": f})
			out[f] = [2]float64{ok, at}
		}
		return out
	}
	start := reloaded()
	for f, v := range start {
		if v[0] != 1 || v[1] == 0 {
			t.Errorf("at start, %s: successful %v at %v; want 1 at a time", f, v[0], v[1])
		}
	}
	scrapeModule := func(module, target string, header http.Header) (int, string) {
		return httpDo(t, base+"/probe?module="+module+"&target="+target, header)
	}
	if code, body := scrapeModule("plain", live.Addr(), alice); code != 200 || !strings.Contains(body, "probe_success 1") {
		t.Fatalf("a scrape of module plain: %d\n%s", code, body)
	}

	// POST /-/reload wants credentials, as /probe does.
	if code, _ := httpSend(t, "POST", base+"/-/reload", nil); code != http.StatusUnauthorized {
		t.Errorf("POST /-/reload without a token: %d, want 401", code)
	}
	if code, _ := httpDo(t, base+"/-/reload", alice); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /-/reload: %d, want 405", code)
	}

	// A broken module file: the reload fails, says why, and plain stays.
	if err := os.WriteFile(modules, []byte("modules:\n  plain:\n    prober: tcp\n  broken: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := httpSend(t, "POST", base+"/-/reload", alice)
	if code != http.StatusInternalServerError || !strings.HasPrefix(body, "failed to reload config: modules-file: ") {
		t.Errorf("POST /-/reload of a broken module file: %d %q; want 500 failed to reload config: modules-file: ...", code, body)
	}
	if got := reloaded(); got["modules-file"][0] != 0 || got["modules-file"][1] != start["modules-file"][1] || got["policy-file"][0] != 1 {
		t.Errorf("after a failed reload: %v; want modules-file at 0, its time unchanged, the rest at 1", got)
	}
	if code, body := scrapeModule("plain", live.Addr(), alice); code != 200 || !strings.Contains(body, "probe_success 1") {
		t.Errorf("module plain after a failed reload: %d\n%s", code, body)
	}
	if _, page := httpDo(t, base+"/", alice); !strings.Contains(page, `<td data-label="file">modules-file</td>`) ||
		!strings.Contains(page, "the last reload failed; the last load stays in use</span> <span class=\"sub\">"+modules) {
		t.Errorf("the page does not show the module file's failed reload:\n%s", page)
	}

	// A FIFO in its place (a writer that never comes) is refused at once,
	// as often as asked: it once held every reload after it for good.
	fifo := modules + ".fifo"
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := modules + ".link"
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	kept, err := os.ReadFile(modules)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link, modules); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if code, body := httpSend(t, "POST", base+"/-/reload", alice); code != http.StatusInternalServerError || !strings.Contains(body, "modules-file: "+modules+": not a regular file but a FIFO") {
			t.Errorf("POST /-/reload of a FIFO: %d %q", code, body)
		}
	}
	if err := os.Remove(modules); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(modules, kept, 0o600); err != nil {
		t.Fatal(err)
	}

	// Mended with a new module, the file loads by itself: no call needed.
	if err := os.WriteFile(modules, []byte("modules:\n  plain:\n    prober: tcp\n  hello:\n    prober: tcp\n    tcp:\n      query_response:\n      - send: hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	probetest.Eventually(t, func() bool { return reloaded()["modules-file"][0] == 1 },
		func() string { return fmt.Sprintf("the mended module file did not load: %v", reloaded()) })
	if code, body := scrapeModule("hello", live.Addr(), alice); code != 200 || !strings.Contains(body, "probe_success 1") {
		t.Errorf("the new module hello: %d\n%s", code, body)
	}
	if code, body := httpSend(t, "POST", base+"/-/reload", alice); code != 200 || body != "reloaded\n" {
		t.Errorf("POST /-/reload of good files: %d %q", code, body)
	}

	// A new token and a wider policy, on SIGHUP: carol may now probe
	// 127.0.0.2, which alice was refused.
	conn := dial(t, p.Addr)
	connect := func(token string, target *probetest.Target) error {
		ctx := metadata.AppendToOutgoingContext(probetest.Context(t), "authorization", "Bearer "+token)
		a := target.Listener.Addr().(*net.TCPAddr)
		_, err := netprobev1.NewProbeServiceClient(conn).Connect(ctx, &netprobev1.ConnectRequest{
			Target: &netprobev1.Target{Host: a.IP.String(), Port: uint32(a.Port)}})
		return err
	}
	if err := connect(aliceToken, other); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("alice to 127.0.0.2 before the reload: %v, want PERMISSION_DENIED", err)
	}
	const carolToken = "carol-0123456789abcdef"
	if err := os.WriteFile(tokens, []byte("alice "+aliceToken+"\ncarol "+carolToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(policy, []byte("caller alice allow 127.0.0.0/8\ncaller carol allow 127.0.0.2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := p.Logged("reloaded")
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	probetest.Eventually(t, func() bool { return p.Logged("reloaded") >= before+3 },
		func() string {
			return fmt.Sprintf("%d files logged reloaded after SIGHUP, want 3", p.Logged("reloaded")-before)
		})
	for _, tc := range []struct {
		token  string
		target *probetest.Target
		want   codes.Code
	}{
		{aliceToken, other, codes.OK},
		{carolToken, other, codes.OK},
		{carolToken, live, codes.PermissionDenied},
		{bobToken, live, codes.Unauthenticated},
	} {
		if err := connect(tc.token, tc.target); status.Code(err) != tc.want {
			t.Errorf("%.5s to %s after the reload: %v, want %v", tc.token, tc.target.Addr(), err, tc.want)
		}
	}
}
