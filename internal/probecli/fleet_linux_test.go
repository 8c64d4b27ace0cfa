package probecli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestFleet runs three probed on three hosts of a namespace LAN, finds them
// through one DNS name, and sweeps two targets from all three with the
// probe binary run on a fourth host. The third vantage point is partitioned
// from the second target by that target's firewall.
func TestFleet(t *testing.T) {
	lan := netlab.NewLAN(t)
	var vantages []*netlab.Host
	for range 3 {
		vantages = append(vantages, lan.AddHost(t))
	}
	targetA, targetB, client := lan.AddHost(t), lan.AddHost(t), lan.AddHost(t)
	for _, h := range []*netlab.Host{targetA, targetB} {
		probetest.NewTarget(t, h.Listen(t, netip.AddrPortFrom(h.V4, 80).String()), nil)
	}
	targetB.NFT(t, fmt.Sprintf(`
table inet partition {
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr %s tcp dport 80 drop
	}
}`, vantages[2].V4))

	dns := dnstest.Serve(t, client.ListenPacket(t, netip.AddrPortFrom(client.V4, 53).String()))
	var addrs []netip.Addr
	for _, v := range vantages {
		probetest.StartProbed(t, v.Command(probedBin, fmt.Sprintf("--listen=%s:7070", v.V4), "--plaintext"))
		addrs = append(addrs, v.V4)
	}
	dns.SetAddrs("probed.fleet.test", addrs...)

	// sweep runs probe sweep on the client host, its output on a terminal
	// or a pipe.
	sweep := func(terminal bool, extra ...string) (string, int) {
		args := append([]string{"sweep", "--dns-server", dns.Addr, "-s", "dns:///probed.fleet.test:7070", "--timeout", "1s",
			targetA.V4.String() + ":80", targetB.V4.String() + ":80"}, extra...)
		cmd := client.Command(probeBin, args...)
		cmd.Env = append(os.Environ(), "NO_COLOR=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		var control *os.File
		if terminal {
			var term *os.File
			control, term = openPTY(t)
			cmd.Stdout = term
			defer term.Close()
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if control != nil {
			cmd.Stdout.(*os.File).Close()
			out, _ := io.ReadAll(control) // EIO once the child has exited
			stdout.Write(bytes.ReplaceAll(out, []byte("\r\n"), []byte("\n")))
		}
		err := cmd.Wait()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("probe sweep: %v\n%s", err, stderr.String())
		}
		if want := "probe: sweep: 1 of 6 probes failed (2 targets, 3 servers)\n"; stderr.String() != want {
			t.Errorf("stderr %q, want %q", stderr.String(), want)
		}
		return stdout.String(), cmd.ProcessState.ExitCode()
	}

	out, code := sweep(true)
	// The terminal gets colours: green cells that connected, red the rest.
	if strings.Count(out, "\x1b[32mok ") != 5 || strings.Count(out, "\x1b[31mTIMEOUT\x1b[0m") != 1 {
		t.Errorf("the terminal's matrix is not coloured per cell:\n%q", out)
	}
	out = regexp.MustCompile("\x1b\\[[0-9]*m").ReplaceAllString(out, "")
	want := []string{
		`^target +198\.18\.0\.1:7070 +198\.18\.0\.2:7070 +198\.18\.0\.3:7070$`,
		`^198\.18\.0\.4:80 +ok \S+ +ok \S+ +ok \S+$`,
		`^198\.18\.0\.5:80 +ok \S+ +ok \S+ +TIMEOUT$`,
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitSweepFailed || len(lines) != len(want) {
		t.Fatalf("exit %d, matrix\n%s", code, out)
	}
	for i, re := range want {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %q", i, lines[i], re)
		}
	}

	out, code = sweep(false, "-o", "json")
	failed := map[string]string{}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var line struct {
			Server string
			Result struct {
				Index   int
				Connect struct {
					Error *struct{ Stage, Reason string }
				}
			}
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		n++
		if e := line.Result.Connect.Error; e != nil {
			failed[fmt.Sprintf("%s %d", line.Server, line.Result.Index)] = e.Stage + " " + e.Reason
		}
	}
	if wantFailed := map[string]string{"198.18.0.3:7070 1": "STAGE_CONNECT REASON_TIMEOUT"}; code != exitSweepFailed || n != 6 || fmt.Sprint(failed) != fmt.Sprint(wantFailed) {
		t.Errorf("-o json: exit %d, %d lines, failures %v; want %d, 6, %v", code, n, failed, exitSweepFailed, wantFailed)
	}
}

// TestLargeSweep sweeps 1,000 targets on a namespace LAN, 100 of them
// behind a firewall that drops SYNs, at --timeout 1s: the sweep has no
// deadline of its own, so the dropped ones time out each on its own, and
// every live target is reported ok, however long the sweep takes.
func TestLargeSweep(t *testing.T) {
	lan := netlab.NewLAN(t)
	prober, target, client := lan.AddHost(t), lan.AddHost(t), lan.AddHost(t)
	probetest.NewTarget(t, target.Listen(t, netip.AddrPortFrom(target.V4, 80).String()), func(c net.Conn) { c.Close() })
	target.NFT(t, `
table inet firewall {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport 81 drop
	}
}`)
	probetest.StartProbed(t, prober.Command(probedBin, fmt.Sprintf("--listen=%s:7070", prober.V4), "--plaintext", "--rate=1000", "--burst=1000"))
	var list strings.Builder
	for i := range 1000 {
		port := 80
		if i%10 == 9 {
			port = 81
		}
		fmt.Fprintf(&list, "%s:%d\n", target.V4, port)
	}
	file := filepath.Join(t.TempDir(), "targets")
	if err := os.WriteFile(file, []byte(list.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// Eight at a time, the dropped targets alone take 12.5 s: longer than any
	// deadline made of the probe's timeout and a margin.
	cmd := client.Command(probeBin, "sweep", "-s", prober.V4.String(), "--timeout", "1s", "--concurrency", "8", "--file", file)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitSweepFailed {
		t.Fatalf("probe sweep: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")[1:]
	ok, timeouts := 0, 0
	for i, l := range lines {
		switch {
		case i%10 != 9 && regexp.MustCompile(`:80 +ok \S+$`).MatchString(l):
			ok++
		case i%10 == 9 && strings.HasSuffix(l, ":81  TIMEOUT"):
			timeouts++
		default:
			t.Errorf("row %d: %q", i, l)
		}
	}
	if ok != 900 || timeouts != 100 || stderr.String() != "probe: sweep: 100 of 1000 probes failed (1000 targets, 1 server)\n" {
		t.Errorf("%d ok, %d timed out; stderr %q", ok, timeouts, stderr.String())
	}
}
