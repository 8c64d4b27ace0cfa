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
	"slices"
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

// TestDocFleetExamples runs docs/cli.md's examples of a fleet (--from), as
// TestDocExamples runs the others, against the fleet they show: n1, n2 and
// n3, labelled zone=z1, z0 and z1, three probed on 127.0.0.161 to .163
// for the doc's 10.0.0.11 to .13, finding each other through a DNS server
// on loopback that names db.internal too, whose port 5432 is a listener
// on loopback; n3 is stopped once every node has heard from every node,
// so that its UNAVAILABLE is real. An example whose last line is "probe:
// sweep: ..." must exit 10, the others 0.
func TestDocFleetExamples(t *testing.T) {
	t.Parallel()
	dns := dnstest.Start(t)
	db := probetest.Listen(t, "127.0.0.1:0", nil)
	dns.SetAddrs("db.internal", netip.MustParseAddr("127.0.0.1"))
	nodes := probetest.StartFleet(t, probedBin, dns, 3, 160, func(i int) []string { return []string{fmt.Sprintf("--label=zone=z%d", i%2)} })
	nodes[2].Stop()
	servers := map[string]string{}
	for i, nd := range nodes {
		servers[fmt.Sprintf("10.0.0.%d", 11+i)] = nd.Probed.Addr
	}
	text, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	examples := 0
	for _, block := range consoleBlocks(string(text)) {
		for _, ex := range block {
			_, args, ok := parseCommand(ex.command)
			if !ok || !slices.Contains(args, "--from") {
				continue
			}
			examples++
			for i, a := range args {
				args[i] = withPorts(a, map[string]string{"5432": port(db)})
				if s, ok := servers[a]; ok {
					args[i] = s
				}
			}
			r := probe(probetest.Context(t), nil, args...)
			if got, want := normalize(r.stdout+r.stderr), normalize(ex.output); !matches(got, want) {
				t.Errorf("$ %s\nprinted\n%s\nwant\n%s", ex.command, r.stdout+r.stderr, ex.output)
			}
			lines := strings.Split(strings.TrimSpace(ex.output), "\n")
			if want := exitCodeOf(lines[len(lines)-1]); r.code != want {
				t.Errorf("$ %s: exit %d, want %d", ex.command, r.code, want)
			}
		}
	}
	if examples < 2 {
		t.Errorf("%d fleet examples found in docs/cli.md, want its two", examples)
	}
}

// exitCodeOf is the exit code of a fleet example whose output ends with
// last.
func exitCodeOf(last string) int {
	if strings.HasPrefix(last, "probe: sweep: ") {
		return exitSweepFailed
	}
	return exitOK
}

// TestServerNameOfSeveral checks what docs/cli.md says of -s NAME with
// --from when NAME has several addresses, as a headless Service's name
// does: the CLI talks to the first address that takes the connection, in
// the order of the name's records, and that node is the entry (its
// results have no address); with that node down, the next. The probe
// binary runs in a mount namespace of its own whose /etc/hosts lists the
// name's addresses.
func TestServerNameOfSeveral(t *testing.T) {
	t.Parallel()
	netlab.Require(t)
	dns := dnstest.Start(t)
	nodes := probetest.StartFleet(t, probedBin, dns, 3, 170, func(int) []string { return nil })
	_, port, _ := net.SplitHostPort(nodes[0].Probed.Addr)
	live := probetest.Listen(t, "127.0.0.1:0", nil).Addr()
	hosts := filepath.Join(t.TempDir(), "hosts")
	// entry runs the sweep with the name's records in order, and returns
	// the node whose results have no address.
	entry := func(order ...int) (string, string) {
		t.Helper()
		var b strings.Builder
		for _, i := range order {
			fmt.Fprintf(&b, "%s fleet.example\n", nodes[i].Addr)
		}
		if err := os.WriteFile(hosts, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(probetest.Context(t), "unshare", "--mount", "sh", "-c", `mount --bind "$1" /etc/hosts && exec "$2" sweep -s "fleet.example:$3" --from all -o json "$4"`,
			"sh", hosts, probeBin, port, live)
		out, err := cmd.Output()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		var self []string
		for l := range strings.Lines(string(out)) {
			var line struct {
				Result struct {
					Vantage *struct{ Node, Address string }
				}
			}
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			if v := line.Result.Vantage; v != nil && v.Address == "" {
				self = append(self, v.Node)
			}
		}
		return strings.Join(self, ","), string(out)
	}
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 0, 2}} {
		if got, out := entry(order...); got != nodes[order[0]].Name {
			t.Errorf("records %v: the entry was %q, want %s\n%s", order, got, nodes[order[0]].Name, out)
		}
	}
	nodes[1].Stop()
	if got, out := entry(1, 0, 2); got != "n1" {
		t.Errorf("records n2 (down), n1, n3: the entry was %q, want n1\n%s", got, out)
	}
}
