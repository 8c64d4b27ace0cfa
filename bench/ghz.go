package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// benchGhz drives Connect with ghz, a load client nobody here wrote, at
// 64 in flight, against probed as it runs in production (limits lifted
// out of the way, every probe's audit line going to a file), next to a
// bare dial+close loop from a process of its own on the same target. It
// also reports what the audit log did.
func benchGhz(ctx context.Context, bin probedBin, o options) ([]row, error) {
	ln, err := acceptingTarget()
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	target := ln.Addr().(*net.TCPAddr)
	dir, err := os.MkdirTemp("", "bench-ghz")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	addr, metrics, stop, err := startProbedLogging(ctx, bin, filepath.Join(dir, "probed.log"))
	if err != nil {
		return nil, err
	}
	defer stop()
	ns, err := startNaiveProber(ctx)
	if err != nil {
		return nil, err
	}
	defer ns.stop()
	naive := ns.addr

	// ghz returns the rate of a run and how many Connects succeeded.
	ghz := func(addr string) (float64, float64, error) {
		out, err := exec.CommandContext(ctx, o.ghz, "--insecure", "--call", "netprobe.v1.ProbeService.Connect",
			"-d", fmt.Sprintf(`{"target":{"host":"127.0.0.1","port":%d}}`, target.Port),
			"-c", "64", "-z", o.duration.String(), "-O", "json", addr).Output()
		if err != nil {
			return 0, 0, fmt.Errorf("ghz: %w", err)
		}
		var r struct {
			RPS                    float64        `json:"rps"`
			StatusCodeDistribution map[string]int `json:"statusCodeDistribution"`
			ErrorDistribution      map[string]int `json:"errorDistribution"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			return 0, 0, fmt.Errorf("ghz's report: %w", err)
		}
		// ghz ends its run by closing its connection under the calls in
		// flight: those, and only those, may fail.
		ended, other := 0, 0
		for code, n := range r.StatusCodeDistribution {
			switch code {
			case "OK":
			case "Canceled", "Unavailable":
				ended += n
			default:
				other += n
			}
		}
		if r.StatusCodeDistribution["OK"] == 0 || other > 0 || ended > 2*64 {
			return 0, 0, fmt.Errorf("ghz: calls failed: %v %v", r.StatusCodeDistribution, r.ErrorDistribution)
		}
		return r.RPS, float64(r.StatusCodeDistribution["OK"]), nil
	}
	// Warm up. The naive prober's CPU is its whole life's, over every
	// Connect it served.
	var naiveConnects float64
	for _, a := range []string{addr, naive} {
		_, n, err := ghz(a)
		if err != nil {
			return nil, err
		}
		if a == naive {
			naiveConnects += n
		}
	}
	before, err := scrapeMetrics(ctx, metrics)
	if err != nil {
		return nil, err
	}
	var gRates, nRates, bRates []float64
	var probing time.Duration
	for range o.rounds {
		t := time.Now()
		rate, _, err := ghz(addr)
		if err != nil {
			return nil, err
		}
		probing += time.Since(t)
		gRates = append(gRates, rate)
		rate, n, err := ghz(naive)
		if err != nil {
			return nil, fmt.Errorf("naive prober: %w", err)
		}
		nRates, naiveConnects = append(nRates, rate), naiveConnects+n
		bare, err := bareApart(ctx, target.String(), 64, o.duration, 0)
		if err != nil {
			return nil, fmt.Errorf("bare dial: %w", err)
		}
		bRates = append(bRates, bare.Rate)
	}
	after, err := scrapeMetrics(ctx, metrics)
	if err != nil {
		return nil, err
	}
	naiveCPU, err := ns.stop()
	if err != nil {
		return nil, fmt.Errorf("naive prober: %w", err)
	}
	// probed's CPU per Connect over the rounds: the naive prober and the
	// bare loop, which run in between, leave it idle.
	probes := after["netprobe_probes_total"] - before["netprobe_probes_total"]
	cpu := time.Duration((after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]) / probes * float64(time.Second))
	naivePer := time.Duration(float64(naiveCPU) / naiveConnects)
	lines := after["netprobe_log_lines_total"] - before["netprobe_log_lines_total"]
	batches := after["netprobe_log_batches_total"] - before["netprobe_log_batches_total"]
	waited := after["netprobe_log_wait_seconds_total"] - before["netprobe_log_wait_seconds_total"]
	g, n, b := median(gRates), median(nRates), median(bRates)
	return []row{
		{"Connect/s via ghz, 64 in flight", fmt.Sprintf("%.0f", g), fmt.Sprintf("%.0f", b), ratio(g, b), "goal >= 0.60; audit log to a file; baseline: a bare dial loop in a process of its own"},
		{"  a naive gRPC prober via ghz", fmt.Sprintf("%.0f", n), fmt.Sprintf("%.0f", b), ratio(n, b), fmt.Sprintf("a gRPC Connect that only dials and closes, in a process of its own; netprobe %s of it", ratio(g, n))},
		{"  CPU per Connect, probed and the naive prober", us(cpu), us(naivePer), ratio(float64(cpu), float64(naivePer)), "each server's user and system time"},
		{"  audit log while ghz ran", fmt.Sprintf("%.0f lines/s, %.0f lines a write", lines/probing.Seconds(), lines/max(batches, 1)), "", "", fmt.Sprintf("%.3f s waiting for the log, no line dropped", waited)},
	}, nil
}

// startProbedLogging runs probed as production does, its log to a file,
// with limits lifted out of the way of the load, and waits until it
// answers.
func startProbedLogging(ctx context.Context, bin probedBin, logFile string) (addr, metrics string, stop func(), err error) {
	free := func() (string, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer l.Close()
		return l.Addr().String(), nil
	}
	if addr, err = free(); err != nil {
		return "", "", nil, err
	}
	if metrics, err = free(); err != nil {
		return "", "", nil, err
	}
	f, err := os.Create(logFile)
	if err != nil {
		return "", "", nil, err
	}
	cmd := bin.prepare(exec.CommandContext(ctx, bin.path, "--listen="+addr, "--metrics-addr="+metrics,
		"--rate=1e9", "--burst=1000000000", "--max-in-flight=1000000", "--max-in-flight-per-caller=1000000",
		"--max-streams-per-connection=1000000", "--max-reads-per-caller=1000000"))
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		f.Close()
		return "", "", nil, err
	}
	stop = func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
	}
	c, err := client.Dial(addr)
	if err != nil {
		stop()
		return "", "", nil, err
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Health(hctx)
		cancel()
		if err == nil {
			return addr, metrics, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", "", nil, fmt.Errorf("probed did not answer: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrapeMetrics reads probed's metrics at addr, each family summed.
func scrapeMetrics(ctx context.Context, addr string) (map[string]float64, error) {
	s := &server{Probed: &probetest.Probed{MetricsAddr: addr}}
	return s.metrics(ctx)
}

// ghzBuild builds the ghz pinned in tools/ghz into dir.
func ghzBuild(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "ghz")
	if b, err := exec.CommandContext(ctx, "go", "build", "-modfile=tools/ghz/go.mod", "-o", bin, "github.com/bojand/ghz/cmd/ghz").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ghz: %w\n%s", err, b)
	}
	return bin, nil
}
